"""The narrow interface the state machine reads and writes through."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

from chain.codec import Struct

T = TypeVar("T", bound=Struct)


class StateView(Protocol):
    """Read-through, write-buffered access to state keys (an ``Overlay`` in practice)."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def get_obj(self, key: bytes, cls: type[T]) -> T | None: ...

    def put_obj(self, key: bytes, value: Struct) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def first_key_after(self, prefix: bytes, after: bytes = b"") -> bytes | None: ...

    def iter_ordered(self, prefix: bytes) -> Iterator[bytes]: ...

    def walk_ordered(self, prefix: bytes) -> Iterator[bytes]: ...
