"""A snapshot as the bytes an SDK is sent, made once per version and moved by patches.

The body of ``GET /sdk/v1/snapshot`` is the canonical flags document with its
``revision``: ``{"version":1,"segments":{...},"flags":{...},"revision":N}``
(``segments`` left out when there are none), compact JSON, entries in key
order. It is kept as one fragment of bytes per flag and per segment
(``"key":{...}``), so a new version re-encodes only the entries that
changed; the whole body, its ETag (a hash of the body) and its gzip form are
joined, hashed and compressed once per version, when first asked for (not
on the write's path), and then served as they are: a 200 or a 304 costs the
HTTP stack and a comparison of tags.

Key order makes the bytes, and so the ETag, the same on every node for the
same version, however each node came by it (patched in place or read whole).
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from unveil.core import FORMAT_VERSION, Ruleset, document_to_data
from unveil.service.documents import Changes, Loaded
from unveil.store.items import PARTS

__all__ = ["CachedSnapshot", "body_of", "fragment"]

#: gzip level of the prepared form: 6 compresses a large environment about as well as 9, faster.
GZIP_LEVEL = 6


def fragment(key: str, data: Any) -> bytes:
    """One entry of a section, as it appears in the body: ``"key":{...}``."""
    return (json.dumps(key) + ":" + json.dumps(data, separators=(",", ":"))).encode()


def body_of(
    fragments: Mapping[str, Mapping[str, bytes]], order: Mapping[str, list[str]], revision: int
) -> bytes:
    """The whole body from its fragments: what ``json.dumps`` of the document would give."""
    out = [b'{"version":%d' % FORMAT_VERSION]
    for part in ("segments", "flags"):
        keys = order[part]
        if part == "segments" and not keys:
            continue  # the canonical document leaves out an empty segments section
        entries = fragments[part]
        out.append(b',"%s":{' % part.encode())
        out.append(b",".join([entries[k] for k in keys]))
        out.append(b"}")
    out.append(b',"revision":%d}' % revision)
    return b"".join(out)


class CachedSnapshot:
    """A snapshot ready to send, and its flags compiled for evaluation here (OFREP).

    Immutable in what it answers: a new version is a new snapshot, sharing
    the fragments that did not change.
    """

    __slots__ = (
        "_body",
        "_etag",
        "_fragments",
        "_gzipped",
        "_lock",
        "_order",
        "ruleset",
        "version",
    )

    def __init__(
        self,
        version: int,
        ruleset: Ruleset,
        fragments: dict[str, dict[str, bytes]],
        order: dict[str, list[str]],
    ) -> None:
        self.version = version
        self.ruleset = ruleset
        self._fragments = fragments
        self._order = order
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._etag: str | None = None
        self._gzipped: bytes | None = None

    @classmethod
    def whole(cls, loaded: Loaded, data: Mapping[str, Any] | None = None) -> CachedSnapshot:
        """The snapshot of an environment read whole: every entry encoded.

        ``data`` is the document's canonical data when the caller has it already.
        """
        if data is None:
            data = document_to_data(loaded.ruleset.document)
        fragments = {
            part: {k: fragment(k, v) for k, v in data.get(part, {}).items()} for part in PARTS
        }
        order = {part: sorted(fragments[part]) for part in PARTS}
        return cls(loaded.version, loaded.ruleset, fragments, order)

    def moved(self, loaded: Loaded, changes: Changes | None) -> tuple[CachedSnapshot, Changes]:
        """The snapshot at ``loaded``'s version, and the patch's sections from this one.

        With ``changes`` (what the versions in between changed, canonical) only
        those entries are encoded again; without, the whole document is, and
        the patch is what differs. Either way the patch holds only entries
        whose bytes differ.
        """
        if changes is None:
            data = document_to_data(loaded.ruleset.document)
            fresh = CachedSnapshot.whole(loaded, data)
            patch: Changes = {}
            for part in PARTS:
                old, new = self._fragments[part], fresh._fragments[part]
                section = {k: data[part][k] for k, b in new.items() if old.get(k) != b}
                section.update((k, None) for k in old if k not in new)
                patch[part] = section
            return fresh, patch
        fragments = dict(self._fragments)
        order = dict(self._order)
        patch = {part: {} for part in PARTS}
        for part, entries in changes.items():
            if not entries:
                continue
            section = fragments[part] = dict(fragments[part])
            keys = order[part]
            for key, value in entries.items():
                if value is None:
                    if section.pop(key, None) is not None:
                        keys = keys if keys is not self._order[part] else list(keys)
                        del keys[bisect.bisect_left(keys, key)]
                        patch[part][key] = None
                    continue
                encoded = fragment(key, value)
                if key not in section:
                    keys = keys if keys is not self._order[part] else list(keys)
                    bisect.insort(keys, key)
                elif section[key] == encoded:
                    continue
                section[key] = encoded
                patch[part][key] = value
            order[part] = keys
        return CachedSnapshot(loaded.version, loaded.ruleset, fragments, order), patch

    # -- the prepared forms ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether body and ETag are made (else ``prepare`` them off the event loop)."""
        return self._etag is not None

    def prepare(self) -> CachedSnapshot:
        """Join and hash the body, once."""
        if self._etag is None:
            with self._lock:
                if self._etag is None:
                    body = body_of(self._fragments, self._order, self.version)
                    self._body = body
                    self._etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return self

    @property
    def body(self) -> bytes:
        """The snapshot's JSON body."""
        body = self.prepare()._body
        assert body is not None
        return body

    @property
    def etag(self) -> str:
        """A strong tag of the body: the same bytes on every node give the same tag."""
        etag = self.prepare()._etag
        assert etag is not None
        return etag

    @property
    def gzip_ready(self) -> bool:
        return self._gzipped is not None

    @property
    def gzipped(self) -> bytes:
        """The body in gzip form, compressed once (no timestamp: the same bytes everywhere)."""
        if self._gzipped is None:
            body = self.body
            with self._lock:
                if self._gzipped is None:
                    self._gzipped = gzip.compress(body, GZIP_LEVEL, mtime=0)
        return self._gzipped

    def event(self) -> tuple[bytes, bytes, bytes]:
        """The snapshot as a server-sent event, in parts: the body is sent as it is, not copied."""
        return b"event: snapshot\nid: %d\ndata: " % self.version, self.body, b"\n\n"
