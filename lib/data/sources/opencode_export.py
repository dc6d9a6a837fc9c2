"""`opencode export <sessionID>` JSON files: `{info, messages: [{info, parts}], todos?}`."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from lib.data.session import Session
from lib.data.sources.common import InputError, Rejected, check_schema, load_json_file, read_head
from lib.data.sources.opencode import SCHEMA, to_session

# An export starts with one of its own keys; peeking at the head avoids parsing every JSON file
# in the folder just to find out whose it is.
_HEAD = re.compile(rb'^\s*\{\s*"(?:info|messages|todos)"\s*:')
_HEAD_BYTES = 512


class OpenCodeExportReader:
    name = "opencode-export"
    schema = SCHEMA

    def detect(self, path: Path) -> bool:
        head = read_head(path, _HEAD_BYTES) if path.suffix == ".json" else None
        return head is not None and bool(_HEAD.match(head.removeprefix(b"\xef\xbb\xbf")))

    def read(self, path: Path, rel: str) -> Iterator[Session | Rejected]:
        data = load_json_file(path)
        if not isinstance(data, dict) or "info" not in data or "messages" not in data:
            raise InputError("not an `opencode export` file (needs top-level 'info' and 'messages'); "
                             "re-create it with `opencode export <sessionID> > file.json`")
        # One session per file: a broken message makes the whole session untrustworthy.
        check_schema(data, self.schema)
        messages = [(m["info"], m["parts"]) for m in data["messages"]]
        session = to_session(data["info"], messages, self.name, rel)
        if session is not None:
            yield session
