"""The delta-spark jars (and Hadoop's S3A connector), resolved once from Maven Central and used offline afterwards.

`python -m engine.spark.jars [--dest DIR]` (run by `make setup`) resolves
`io.delta:delta-spark_<spark major.minor>_2.13:<delta version>` for the installed `pyspark` and
`delta-spark` (the artifact `delta.pip_utils.configure_spark_with_delta_pip` names) with Spark's own Ivy
resolution (`spark.jars.packages`, `spark.jars.ivy=<DIR>/ivy`), then writes `<DIR>/jars.txt`: the
absolute path of every jar Spark resolved (delta-spark and its dependencies), one a line. Sessions read
that manifest (`jar_paths`) and never touch the network. Running it again with the jars in place does
nothing; `--print-jars` prints them as one comma-separated line for `spark-submit --jars`. Ivy's report goes
to `<DIR>/resolve.log` and is printed only when the resolution fails.

Ivy settings name Maven Central only (`<DIR>/ivysettings.xml`): Spark's default chain tries `~/.m2`
first, and a `~/.m2` that holds a pom without its jar (left by `mvn dependency:get -Dtransitive=false`,
an IDE, …) makes the whole resolution fail with "NOT FOUND … local-m2-cache".

`--s3a` does the same for Spark SQL over `s3a://` (analysts reading a lake on an object store):
`org.apache.hadoop:hadoop-aws` at the Hadoop version pyspark ships (its `hadoop-client-api-<v>.jar`), with the AWS
SDK bundle it depends on (~640 MB), into a manifest of its own, `<DIR>/s3a.txt`. It is kept apart from `jars.txt`
because `spark-submit --jars` copies every listed jar to every executor: jobs that score never need it.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import unquote, urlparse

from engine.errors import ConfigError

SCALA = "2.13"
MANIFEST = "jars.txt"
S3A_MANIFEST = "s3a.txt"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2/"
RESOLVE_ATTEMPTS = 3  # bounded: a broken-off download resumes; a refusal fails after the last
_IVY_SETTINGS = f"""<ivysettings>
  <settings defaultResolver="central"/>
  <resolvers>
    <ibiblio name="central" m2compatible="true" root="{MAVEN_CENTRAL}"/>
  </resolvers>
</ivysettings>
"""


def versions() -> tuple[str, str]:
    """(delta-spark, pyspark) versions installed in this environment."""
    try:
        return version("delta-spark"), version("pyspark")
    except PackageNotFoundError as e:
        raise ConfigError(f"python package {e.name} is not installed; run make setup") from e


def coordinate() -> str:
    delta, spark = versions()
    return f"io.delta:delta-spark_{'.'.join(spark.split('.')[:2])}_{SCALA}:{delta}"


def default_dest() -> Path:
    if os.environ.get("LAKESCORE_JARS_DIR"):
        return Path(os.environ["LAKESCORE_JARS_DIR"])
    delta, spark = versions()
    return Path.home() / ".cache" / "lakescore" / f"jars-delta-{delta}-spark-{spark}"


def hadoop_version() -> str:
    """The Hadoop version of the installed pyspark, from the `hadoop-client-api-<v>.jar` it ships."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise ConfigError("python package pyspark is not installed; run make setup")
    found = sorted(Path(spec.origin).parent.joinpath("jars").glob("hadoop-client-api-*.jar"))
    if not found:
        raise ConfigError(f"pyspark at {Path(spec.origin).parent} ships no hadoop-client-api jar; "
                          "a pyspark built without Hadoop needs hadoop-aws chosen by hand")
    return found[-1].name[len("hadoop-client-api-"):-len(".jar")]


def s3a_coordinate() -> str:
    return f"org.apache.hadoop:hadoop-aws:{hadoop_version()}"


class _JarSet:
    """One Maven coordinate resolved with its dependencies, and the manifest that lists the jars."""

    def __init__(self, name: str, coord: str, manifest: str, setup_hint: str):
        self.name, self.coord, self.manifest, self.setup_hint = name, coord, manifest, setup_hint
        group, artifact, ver = coord.split(":")
        self.main_jar = f"{group}_{artifact}-{ver}.jar"  # Ivy's file name for the artifact itself

    def read(self, dest: Path) -> list[str] | None:
        """The manifest's jars if it exists, every listed file exists, and it holds the main jar; else None."""
        manifest = dest / self.manifest
        if not manifest.is_file():
            return None
        paths = [line.strip() for line in manifest.read_text().splitlines() if line.strip()]
        if not paths or not all(Path(p).is_file() for p in paths):
            return None
        if not any(Path(p).name == self.main_jar for p in paths):
            return None
        return paths


def _delta() -> _JarSet:
    return _JarSet("delta-spark", coordinate(), MANIFEST, "make setup")


def _s3a() -> _JarSet:
    return _JarSet("S3A connector", s3a_coordinate(), S3A_MANIFEST, "python -m engine.spark.jars --s3a (make setup-s3a)")


def jar_paths(dest: str | os.PathLike | None = None, s3a: bool = False) -> list[str]:
    """Absolute paths of the delta-spark jars for this environment, from the manifest `resolve` wrote; with `s3a`,
    followed by hadoop-aws and the AWS SDK bundle (from `resolve(s3a=True)`)."""
    dest = Path(dest) if dest else default_dest()
    sets = [_delta()] + ([_s3a()] if s3a else [])
    paths: list[str] = []
    for jar_set in sets:
        found = jar_set.read(dest)
        if found is None:
            raise ConfigError(f"{jar_set.name} jars for {jar_set.coord} are missing or incomplete in {dest} "
                              f"({jar_set.manifest}); run {jar_set.setup_hint}")
        paths += [p for p in found if p not in paths]
    return paths


def resolve(dest: str | os.PathLike | None = None, s3a: bool = False) -> list[str]:
    """Resolve the jars into `dest` with Spark's Ivy (network, once) and write the manifest; idempotent."""
    dest = (Path(dest) if dest else default_dest()).resolve()
    jar_set = _s3a() if s3a else _delta()
    existing = jar_set.read(dest)
    if existing is not None:
        print(f"{jar_set.name} jars already in {dest} ({len(existing)} jars, manifest {dest / jar_set.manifest})")
        return existing

    from pyspark.sql import SparkSession

    ivy = dest / "ivy"
    ivy.mkdir(parents=True, exist_ok=True)
    settings = dest / "ivysettings.xml"
    settings.write_text(_IVY_SETTINGS)
    coord = jar_set.coord
    print(f"resolving {coord} from Maven Central into {ivy} (once)", flush=True)
    log = dest / f"resolve-{jar_set.manifest.removesuffix('.txt')}.log"
    # The resolution happens when spark-submit launches the JVM; the session itself is not used. Ivy's report
    # (every artifact, one a line) goes to a log file and is shown only if the resolution fails.
    # A download of the AWS SDK bundle (~640 MB) can break off on a busy machine; Ivy keeps the artifacts it
    # completed, so a bounded retry resumes with the missing ones.
    for attempt in range(1, RESOLVE_ATTEMPTS + 1):
        try:
            with quiet_output(log):
                spark = (
                    SparkSession.builder.master("local[1]").appName("lakescore-jars")
                    .config("spark.jars.packages", coord)
                    .config("spark.jars.ivy", str(ivy))
                    .config("spark.jars.ivySettings", str(settings))
                    .config("spark.ui.enabled", "false")
                    .getOrCreate()
                )
            break
        except Exception as e:  # Ivy's report (printed by quiet_output) says which artifact failed
            if attempt < RESOLVE_ATTEMPTS:
                print(f"resolution attempt {attempt} of {RESOLVE_ATTEMPTS} failed ({type(e).__name__}); retrying in "
                      f"{5 * attempt} s", file=sys.stderr, flush=True)
                time.sleep(5 * attempt)
                continue
            raise ConfigError(
                f"could not resolve {coord} from {MAVEN_CENTRAL} into {ivy} after {RESOLVE_ATTEMPTS} attempts "
                f"({type(e).__name__}); check access to Maven Central and run {jar_set.setup_hint} again "
                f"(Ivy's log: {log})"
            ) from e
    with quiet_output(log):
        try:
            # What spark-submit resolved and put on the classpath, in its order; not a glob of ivy/jars, which
            # may still hold the jars of an earlier resolution (another version).
            resolved = spark.sparkContext.getConf().get("spark.jars", "")
        finally:
            spark.stop()
    paths = [unquote(urlparse(u).path) if u.startswith("file:") else u for u in resolved.split(",") if u]
    if not any(Path(p).name == jar_set.main_jar for p in paths):
        raise ConfigError(f"resolving {coord} gave no {jar_set.main_jar} (got {len(paths)} jars); "
                          f"run {jar_set.setup_hint} again")
    tmp = dest / (jar_set.manifest + ".tmp")
    tmp.write_text("".join(p + "\n" for p in paths))
    tmp.replace(dest / jar_set.manifest)
    print(f"resolved {len(paths)} jars; manifest {dest / jar_set.manifest}")
    return paths


@contextlib.contextmanager
def quiet_output(log_path: Path, tail_lines: int = 60):
    """Send this process's stdout and stderr (file descriptors 1 and 2, so child processes such as the JVM too) to
    `log_path`; on an exception, print the log's last `tail_lines` lines to stderr before it propagates."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log_path, "wb") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    except BaseException:
        lines = Path(log_path).read_text(errors="replace").splitlines()[-tail_lines:]
        print("\n".join(lines), file=sys.stderr, flush=True)
        raise
    finally:
        os.close(saved[0])
        os.close(saved[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.spark.jars", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", help="folder for the jars (default: $LAKESCORE_JARS_DIR, else "
                        "~/.cache/lakescore/jars-delta-<version>-spark-<version>)")
    parser.add_argument("--print-jars", action="store_true",
                        help="print the jars as one comma-separated line (for spark-submit --jars); resolve nothing")
    parser.add_argument("--s3a", action="store_true",
                        help="the S3A connector (hadoop-aws and the AWS SDK bundle, ~640 MB) for Spark SQL over s3a://; "
                        "with --print-jars, the delta-spark jars followed by these")
    args = parser.parse_args(argv)
    try:
        if args.print_jars:
            print(",".join(jar_paths(args.dest, s3a=args.s3a)))
            return 0
        resolve(args.dest, s3a=args.s3a)  # says where the manifest is; --print-jars lists the jars
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
