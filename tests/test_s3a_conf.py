"""A lake's delta-rs storage options as Hadoop S3A settings (no Spark here; tests/test_object_store.py reads a real
store through them)."""
from __future__ import annotations

import pytest

from engine.config import LakeConfig
from engine.spark.session import is_s3, s3a_conf

S3_IMPL = {"spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
           "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A"}


def test_an_s3_compatible_store_over_http():
    """What the object-store tests and a MinIO-like store use: path-style requests, no SSL, the region."""
    opts = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    assert s3a_conf(opts) == {**S3_IMPL,
                              "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
                              "spark.hadoop.fs.s3a.path.style.access": "true",
                              "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
                              "spark.hadoop.fs.s3a.endpoint.region": "us-east-1"}


def test_aws_itself_needs_only_the_region():
    assert s3a_conf({"AWS_REGION": "eu-west-1"}) == {**S3_IMPL, "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1"}
    assert s3a_conf({}) == S3_IMPL


@pytest.mark.parametrize("opts, style", [
    ({"aws_endpoint": "https://s3.example.com", "region": "r1"}, "true"),
    ({"endpoint": "https://s3.example.com", "AWS_DEFAULT_REGION": "r1", "aws_virtual_hosted_style_request": "false"},
     "true"),
    ({"AWS_ENDPOINT": "https://s3.example.com", "aws_region": "r1", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "True"},
     "false"),
])
def test_delta_rs_spellings_of_the_same_settings(opts, style):
    """delta-rs takes each setting under several names, any case; an https endpoint keeps SSL on."""
    assert s3a_conf(opts) == {**S3_IMPL,
                              "spark.hadoop.fs.s3a.endpoint": "https://s3.example.com",
                              "spark.hadoop.fs.s3a.path.style.access": style,
                              "spark.hadoop.fs.s3a.endpoint.region": "r1"}


def test_delta_rs_commit_settings_do_not_reach_the_reader_and_nothing_is_secret():
    opts = LakeConfig(root="s3://b/lake", storage_options={
        "AWS_REGION": "us-east-1", "AWS_S3_ALLOW_UNSAFE_RENAME": True, "AWS_CONDITIONAL_PUT": "etag"}).storage_options
    conf = s3a_conf(opts)
    assert conf == {**S3_IMPL, "spark.hadoop.fs.s3a.endpoint.region": "us-east-1"}
    assert not [k for k in conf if "key" in k or "secret" in k or "token" in k or "credentials" in k]


def test_which_roots_are_s3():
    assert is_s3("s3://b/lake") and is_s3("s3a://b/lake")
    assert not is_s3("/data/lake") and not is_s3("gs://b/lake") and not is_s3("./s3/lake")
