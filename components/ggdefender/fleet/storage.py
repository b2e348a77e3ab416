"""Small files of the fleet tier (baselines models and daily partials) in a local directory or under an S3
prefix (`s3://bucket/prefix`): read with a size bound, write whole (atomically locally; an S3 PUT is atomic),
list, delete. On AWS the daily job writes the models to S3 and the streaming job reads them from there."""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

from ggdefender.statefile import atomic_write

MAX_LISTED = 10_000


class StorageError(OSError):
    """A location cannot be read or written; the message names it."""


class LocalDir:
    def __init__(self, root: str):
        self.root = root

    def where(self, name: str) -> str:
        return os.path.join(self.root, name)

    def read(self, name: str, limit: int) -> Optional[bytes]:
        """The file's bytes; None when it does not exist; ValueError when it is larger than `limit`."""
        try:
            with open(self.where(name), "rb") as fh:
                data = fh.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{self.where(name)}: cannot read: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise ValueError(f"larger than {limit} bytes")
        return data

    def write(self, name: str, data: bytes) -> None:
        path = self.where(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, data, mode=0o644)

    def names(self, folder: str = "") -> List[str]:
        """File names directly in `folder` (not paths)."""
        try:
            return sorted(n for n in os.listdir(self.where(folder)) if os.path.isfile(self.where(os.path.join(folder, n))))
        except FileNotFoundError:
            return []

    def delete(self, name: str) -> None:
        try:
            os.remove(self.where(name))
        except FileNotFoundError:
            pass


class S3Prefix:
    def __init__(self, bucket: str, prefix: str, client: Any = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise StorageError(f"{self.where('')}: reading S3 needs boto3 (pip install boto3)") from None
            self._client = boto3.client("s3")
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def where(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def read(self, name: str, limit: int) -> Optional[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            if obj.get("ContentLength", 0) > limit:
                raise ValueError(f"larger than {limit} bytes")
            return obj["Body"].read(limit + 1)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise StorageError(f"{self.where(name)}: cannot read: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"{self.where(name)}: cannot read: {exc}") from None

    def write(self, name: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data,
                                   ContentType="application/json")
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"{self.where(name)}: cannot write: {exc}") from None

    def names(self, folder: str = "") -> List[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = self.key(folder).strip("/")
        prefix = prefix + "/" if prefix else ""
        out: List[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                out.extend(o["Key"][len(prefix):] for o in page.get("Contents", []))
                if len(out) > MAX_LISTED:
                    raise StorageError(f"{self.where(folder)}: more than {MAX_LISTED} objects")
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"{self.where(folder)}: cannot list: {exc}") from None
        return sorted(out)

    def delete(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"{self.where(name)}: cannot delete: {exc}") from None


def location(uri: str) -> Any:
    """A directory path or `s3://bucket[/prefix]` -> LocalDir or S3Prefix."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"{uri}: expected s3://bucket/prefix")
        return S3Prefix(bucket, prefix)
    if "://" in uri:
        raise ValueError(f"{uri}: expected a local path or s3://bucket/prefix")
    return LocalDir(uri)


def split_file(uri: str) -> Tuple[Any, str]:
    """A file's location -> (its folder's storage, its name)."""
    if uri.startswith("s3://"):
        folder, _, name = uri.rpartition("/")
        if folder == "s3:/":  # s3://bucket with no key
            raise ValueError(f"{uri}: expected s3://bucket/key")
        return location(folder), name
    return location(os.path.dirname(uri) or "."), os.path.basename(uri)


def is_file(uri: str) -> bool:
    """Whether `uri` names one file (a local file, or an S3 key ending in .json) rather than a folder."""
    if uri.startswith("s3://"):
        return uri.endswith(".json")
    return os.path.isfile(uri)
