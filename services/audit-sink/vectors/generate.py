#!/usr/bin/python3
"""
Writes the frozen vectors of the audit sink replicas' own byte formats (vectors/replication.json)
with a second, independent implementation: Python 3.11's hashlib, json and struct. The spec
(src/replication/vectors.spec.ts) recomputes every value with the TypeScript code and compares.
The formats (services/audit-sink/REPLICATION.md, "Byte formats"):

  record line      {"index":<n>,"leaf":"<hex SHA-256(0x00 || canonical event JSON)>","event":<canonical JSON>}\\n
                   (@keyshard/audit-log record-format.ts; here only as the payload of the others)
  pending entry    {"term":<t>,"start":<s>,"bytes":<n>,"sha256":"<hex of the lines>"}\\n<n bytes of record lines>
                   (DIR/replica/pending.log: entries back to back; the tail is the last intact one)
  state file       {"currentTerm":<t>,"votedFor":"<id>"|null,"appliedTerm":<t>}   (DIR/replica/state.json)
  frame            <uint32 big-endian length of the header><header JSON><record lines>  (wire.ts)

    /usr/bin/python3 services/audit-sink/vectors/generate.py --check   # exit 1 if the file differs
    /usr/bin/python3 services/audit-sink/vectors/generate.py           # rewrite it

Rewrite it only for a deliberate new format.
"""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def canonical(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_line(index: int, event: dict) -> bytes:
    entry = canonical(event).encode("utf-8")
    leaf = hashlib.sha256(b"\x00" + entry).hexdigest()
    return b'{"index":%d,"leaf":"%s","event":' % (index, leaf.encode()) + entry + b"}\n"


def event(i: int) -> dict:
    return {
        "ceremony_id": "", "code": "", "details": {"n": str(i), "note": "café"}, "id": f"ev-{i}", "key_id": "k1",
        "operation": "keys.Encrypt", "principal": "app", "request_id": f"r-{i}", "result": "ok",
        "source": "coordinator-1", "time": f"2026-12-06T10:00:0{i}.000Z",
    }


def pending_entry(term: int, start: int, lines: bytes) -> bytes:
    header = b'{"term":%d,"start":%d,"bytes":%d,"sha256":"%s"}\n' % (term, start, len(lines), hashlib.sha256(lines).hexdigest().encode())
    return header + lines


def frame(header_json: str, records: bytes) -> bytes:
    h = header_json.encode("utf-8")
    return struct.pack(">I", len(h)) + h + records


def build() -> dict:
    lines = record_line(7, event(7)) + record_line(8, event(8))
    e1 = pending_entry(3, 7, record_line(7, event(7)))
    e2 = pending_entry(4, 7, lines)
    torn = b'{"term":5,"start":9,"bytes":100,"sha256":"00"}\n{"index"'
    replicate = {
        "term": 4, "leader": "audit-sink-2", "start": 7, "prevRoot": "ab" * 32,
        "checkpoint": {"tree_size": 7, "root_hash": "ab" * 32, "time": "2026-12-06T10:00:06.000Z", "key_id": "0011223344556677", "signature": "c2lnbmF0dXJl"},
        "end": 9,
    }
    vote = {"term": 5, "candidate": "audit-sink-3", "lastTerm": 4, "size": 9, "preVote": True}
    return {
        "replication.json": {
            "description": "Audit sink replica formats (REPLICATION.md, Byte formats); record lines as UTF-8 text",
            "record_lines": lines.decode("utf-8"),
            "pending": {
                "entries": [
                    {"term": 3, "start": 7, "lines": record_line(7, event(7)).decode("utf-8"), "entry_hex": e1.hex()},
                    {"term": 4, "start": 7, "lines": lines.decode("utf-8"), "entry_hex": e2.hex()},
                ],
                "file_hex": (e1 + e2 + torn).hex(),
                "tail": {"term": 4, "start": 7},
                "valid_bytes": len(e1 + e2),
            },
            "state": [
                {"state": {"currentTerm": 5, "votedFor": "audit-sink-3", "appliedTerm": 4}, "text": '{"currentTerm":5,"votedFor":"audit-sink-3","appliedTerm":4}'},
                {"state": {"currentTerm": 2, "votedFor": None, "appliedTerm": 0}, "text": '{"currentTerm":2,"votedFor":null,"appliedTerm":0}'},
            ],
            "frames": [
                {"method": "Replicate", "header_json": canonical_order(replicate), "records": lines.decode("utf-8"), "frame_hex": frame(canonical_order(replicate), lines).hex()},
                {"method": "Vote", "header_json": canonical_order(vote), "records": "", "frame_hex": frame(canonical_order(vote), b"").hex()},
            ],
        }
    }


def canonical_order(v: dict) -> str:
    # The header as the sender writes it: JSON without spaces, keys in the order given.
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def main(argv: list) -> int:
    text = json.dumps(build()["replication.json"], indent=2, ensure_ascii=False) + "\n"
    path = os.path.join(HERE, "replication.json")
    if "--check" not in argv:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return 0
    same = os.path.exists(path) and open(path, encoding="utf-8").read() == text
    print("checked" if same else "replication.json differs from the generator", file=sys.stderr)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
