"""The delta-spark jars, resolved once from Maven Central at setup and used offline afterwards.

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
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import unquote, urlparse

from engine.errors import ConfigError

SCALA = "2.13"
MANIFEST = "jars.txt"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2/"
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


def _delta_jar_name() -> str:
    _, artifact, ver = coordinate().split(":")
    return f"io.delta_{artifact}-{ver}.jar"


def _read_manifest(dest: Path) -> list[str] | None:
    """The manifest's jars if it exists, every listed file exists, and it holds this delta-spark; else None."""
    manifest = dest / MANIFEST
    if not manifest.is_file():
        return None
    paths = [line.strip() for line in manifest.read_text().splitlines() if line.strip()]
    if not paths or not all(Path(p).is_file() for p in paths):
        return None
    if not any(Path(p).name == _delta_jar_name() for p in paths):
        return None
    return paths


def jar_paths(dest: str | os.PathLike | None = None) -> list[str]:
    """Absolute paths of the delta-spark jars for this environment, from the manifest `resolve` wrote."""
    dest = Path(dest) if dest else default_dest()
    paths = _read_manifest(dest)
    if paths is None:
        raise ConfigError(
            f"delta-spark jars for {coordinate()} are missing or incomplete in {dest} ({MANIFEST}); run make setup"
        )
    return paths


def resolve(dest: str | os.PathLike | None = None) -> list[str]:
    """Resolve the jars into `dest` with Spark's Ivy (network, once) and write the manifest; idempotent."""
    dest = (Path(dest) if dest else default_dest()).resolve()
    existing = _read_manifest(dest)
    if existing is not None:
        print(f"delta-spark jars already in {dest} ({len(existing)} jars, manifest {dest / MANIFEST})")
        return existing

    from pyspark.sql import SparkSession

    ivy = dest / "ivy"
    ivy.mkdir(parents=True, exist_ok=True)
    settings = dest / "ivysettings.xml"
    settings.write_text(_IVY_SETTINGS)
    coord = coordinate()
    print(f"resolving {coord} from Maven Central into {ivy} (once)", flush=True)
    # The resolution happens when spark-submit launches the JVM; the session itself is not used. Ivy's report
    # (every artifact, one a line) goes to a log file and is shown only if the resolution fails.
    with quiet_output(dest / "resolve.log"):
        try:
            spark = (
                SparkSession.builder.master("local[1]").appName("lakescore-jars")
                .config("spark.jars.packages", coord)
                .config("spark.jars.ivy", str(ivy))
                .config("spark.jars.ivySettings", str(settings))
                .config("spark.ui.enabled", "false")
                .getOrCreate()
            )
        except Exception as e:  # Ivy's report (printed by quiet_output) says which artifact failed
            raise ConfigError(
                f"could not resolve {coord} from {MAVEN_CENTRAL} into {ivy} ({type(e).__name__}); "
                f"check access to Maven Central and run make setup again (Ivy's log: {dest / 'resolve.log'})"
            ) from e
        try:
            # What spark-submit resolved and put on the classpath, in its order; not a glob of ivy/jars, which
            # may still hold the jars of an earlier resolution (another delta-spark version).
            resolved = spark.sparkContext.getConf().get("spark.jars", "")
        finally:
            spark.stop()
    paths = [unquote(urlparse(u).path) if u.startswith("file:") else u for u in resolved.split(",") if u]
    if not any(Path(p).name == _delta_jar_name() for p in paths):
        raise ConfigError(f"resolving {coord} gave no {_delta_jar_name()} (got {len(paths)} jars); run make setup again")
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text("".join(p + "\n" for p in paths))
    tmp.replace(dest / MANIFEST)
    print(f"resolved {len(paths)} jars; manifest {dest / MANIFEST}")
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
    args = parser.parse_args(argv)
    try:
        if args.print_jars:
            print(",".join(jar_paths(args.dest)))
            return 0
        resolve(args.dest)  # says where the manifest is; --print-jars lists the jars
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
