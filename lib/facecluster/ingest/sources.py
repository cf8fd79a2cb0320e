"""Where photos come from: a local folder, an S3 prefix, or a manifest of keys.

A *library* is one bucket + prefix (the API's `bucket_name`/`sub_bucket`); faces, runs and
persons belong to a library. Sources list `SourceItem`s; `read_uri` reads the bytes of any item.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.config import Config

from facecluster.engine.decode import IMAGE_SUFFIXES
from facecluster.errors import InvalidInput
from facecluster.settings import Settings

LIBRARY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})*$")
MANIFEST_SUFFIXES = (".parquet", ".csv", ".txt")


class SourceError(InvalidInput):
    """A source that cannot be used, with the reason."""


def validate_library(name: str) -> str:
    """A library name: letters, digits, '.', '_', '-' in up to 4 '/'-separated parts, no '..'."""
    if not LIBRARY_PATTERN.fullmatch(name) or ".." in name or name.count("/") > 3 or len(name) > 200:
        raise SourceError(
            f"invalid library name {name!r}: use letters, digits, '.', '_' and '-', in at most 4 parts "
            "separated by '/', each starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class SourceItem:
    key: str  # unique within the library
    uri: str  # where to read it: a local path or s3://bucket/key
    size: int
    etag: str  # changes when the content does


@dataclass(frozen=True, slots=True)
class S3Options:
    """Connection settings for an S3-compatible store, passed to workers explicitly."""

    endpoint_url: str | None
    region: str | None
    access_key: str | None
    secret_key: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Options:
        return cls(
            endpoint_url=settings.s3.s3_endpoint_url,
            region=settings.s3.s3_region,
            access_key=settings.s3.s3_access_key.get_secret_value() if settings.s3.s3_access_key else None,
            secret_key=settings.s3.s3_secret_key.get_secret_value() if settings.s3.s3_secret_key else None,
        )


@lru_cache(maxsize=8)
def s3_client(options: S3Options) -> Any:
    """One boto3 client per process and connection settings."""
    return boto3.client(
        "s3",
        endpoint_url=options.endpoint_url,
        region_name=options.region,
        aws_access_key_id=options.access_key,
        aws_secret_access_key=options.secret_key,
        config=Config(retries={"max_attempts": 5, "mode": "adaptive"}, max_pool_connections=32),
    )


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def read_uri(uri: str, s3: S3Options) -> bytes:
    """The bytes behind a local path or an s3:// URI."""
    if uri.startswith("s3://"):
        bucket, key = split_s3(uri)
        body = s3_client(s3).get_object(Bucket=bucket, Key=key)["Body"]
        return bytes(body.read())
    return Path(uri).read_bytes()


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


@dataclass(frozen=True, slots=True)
class Source:
    """A parsed SOURCE argument."""

    kind: Literal["folder", "s3", "manifest"]
    location: str
    default_library: str

    def items(self, s3: S3Options) -> Iterator[SourceItem]:
        """Every photo of a folder or an S3 prefix, in key order (manifests are read by Ray Data)."""
        if self.kind == "folder":
            root = Path(self.location)
            for path in sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p.name)):
                stat = path.stat()
                yield SourceItem(
                    path.relative_to(root).as_posix(), str(path), stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}"
                )
        elif self.kind == "s3":
            bucket, prefix = split_s3(self.location)
            pages = s3_client(s3).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    if is_image_name(obj["Key"]):
                        yield SourceItem(obj["Key"], f"s3://{bucket}/{obj['Key']}", obj["Size"], obj["ETag"].strip('"'))
        else:
            raise SourceError("a manifest is read by Ray Data, not listed")


def parse_source(spec: str) -> Source:
    """`s3://bucket/prefix`, a folder, or a manifest file (.parquet, .csv or .txt of keys)."""
    if spec.startswith("s3://"):
        bucket, prefix = split_s3(spec)
        if not bucket:
            raise SourceError(f"{spec}: no bucket")
        library = "/".join(part for part in [bucket, prefix.strip("/")] if part)
        return Source("s3", f"s3://{bucket}/{prefix}", _safe_library(library))
    path = Path(spec)
    if path.is_dir():
        return Source("folder", str(path.resolve()), _safe_library(path.resolve().name))
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return Source("manifest", str(path.resolve()), _safe_library(path.stem))
    if not path.exists():
        raise SourceError(f"{spec}: no such folder or file")
    raise SourceError(f"{spec}: not a folder, an s3:// URI or a manifest ({', '.join(MANIFEST_SUFFIXES)})")


def _safe_library(name: str) -> str:
    """A valid library name derived from a folder, file or bucket name."""
    cleaned = "/".join(
        re.sub(r"[^A-Za-z0-9._-]+", "_", part).lstrip("._-")[:63] or "library" for part in name.split("/")[:4]
    )
    return validate_library(cleaned)
