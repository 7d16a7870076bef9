from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def s3_emulator():
    """A local S3 emulator (moto) on 127.0.0.1 with an empty bucket ``vlp-test``; yields boto3 storage options.

    Nothing leaves the machine: the endpoint is plain http on localhost and the credentials are dummies."""
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    opts = {"endpoint_url": f"http://{host}:{port}", "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing", "region_name": "us-east-1"}  # fmt: skip
    boto3.client("s3", **opts).create_bucket(Bucket="vlp-test")
    yield opts
    server.stop()
