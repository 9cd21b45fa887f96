"""Server reflection that serves our contracts with their comments.

Generated Python modules register descriptors without source info, and grpcio-reflection
serializes files with CopyToProto, which drops it anyway; so grpcurl `describe` would show no
documentation. gen/tke/descriptors.binpb (written by `make gen`) keeps the comments. The pool
below answers reflection from the process's default pool, but hands out our files as they are
in that set, comments included.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool


class _DocumentedFile:
    """A FileDescriptor whose CopyToProto includes source info."""

    def __init__(self, pool: DocumentedPool, descriptor: Any) -> None:
        self._pool = pool
        self._descriptor = descriptor
        self.name: str = descriptor.name

    @property
    def dependencies(self) -> list[Any]:
        return [self._pool.wrap(d) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        documented = self._pool.documented.get(self.name)
        if documented is not None:
            proto.CopyFrom(documented)
        else:
            self._descriptor.CopyToProto(proto)


class DocumentedPool:
    """The parts of DescriptorPool that grpcio-reflection uses."""

    def __init__(self, documented: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self.documented = documented
        self._pool = descriptor_pool.Default()

    def wrap(self, descriptor: Any) -> _DocumentedFile:
        return _DocumentedFile(self, descriptor)

    def FindFileByName(self, name: str) -> _DocumentedFile:
        return self.wrap(self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:
        return self.wrap(self._pool.FindFileContainingSymbol(symbol))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


@functools.cache
def documented_pool() -> DocumentedPool:
    # tke is a namespace package (gen/tke, and the folders mapped into it), which
    # importlib.resources cannot read a file from in Python 3.11: look in each portion.
    import tke

    found = [p for p in (Path(folder, "descriptors.binpb") for folder in tke.__path__) if p.is_file()]
    if not found:
        raise FileNotFoundError("tke/descriptors.binpb is not installed (make gen)")
    data = found[0].read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return DocumentedPool({f.name: f for f in files if f.name.startswith("tke/")})
