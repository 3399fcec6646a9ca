#!/usr/bin/python3
"""
Writes the frozen vectors of @keyshard/audit-log (vectors/*.json) with a second, independent
implementation of the formats in VECTORS.md: Python 3.11's hashlib, hmac and json, and
pyca/cryptography (Debian 12's python3-cryptography) for Ed25519 (RFC 8032). Nothing here is
shared with the TypeScript code; the specs (src/*.vectors.spec.ts) recompute every value from
the same inputs and compare. Every key in the files is TEST-ONLY: published, so it protects
nothing.

    /usr/bin/python3 packages/audit-log/vectors/generate.py --check   # exit 1 if a file differs
    /usr/bin/python3 packages/audit-log/vectors/generate.py           # rewrite them

Rewrite them only for a deliberate new format: a changed value is a format change, and logs
already written and other implementations depend on the old one.
"""
import base64
import hashlib
import hmac
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = os.path.dirname(os.path.abspath(__file__))


def sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


# --- RFC 6962 §2.1 ---------------------------------------------------------------------------

def leaf_hash(entry: bytes) -> bytes:
    return sha256(b"\x00", entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01", left, right)


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list) -> bytes:
    if not d:
        return sha256()
    if len(d) == 1:
        return leaf_hash(d[0])
    k = split(len(d))
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list) -> list:
    if len(d) <= 1:
        return []
    k = split(len(d))
    return path(m, d[:k]) + [mth(d[k:])] if m < k else path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list, whole: bool) -> list:
    if m == len(d):
        return [] if whole else [mth(d)]
    k = split(len(d))
    if m <= k:
        return subproof(m, d[:k], whole) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def consistency(m: int, d: list) -> list:
    return subproof(m, d, True) if 0 < m < len(d) else []


# The Certificate Transparency reference data (transparency-dev/merkle testonly/constants.go,
# proof/verify_test.go), as data: this implementation must reproduce it before writing anything.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOT_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
CT_INCLUSION = {  # (index 0-based, size): proof
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}
CT_CONSISTENCY = {
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (6, 7): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a", "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}


def merkle_vector() -> dict:
    d = [bytes.fromhex(x) for x in CT_LEAVES]
    assert mth(d).hex() == CT_ROOT_8
    for (m, n), proof in CT_INCLUSION.items():
        assert [h.hex() for h in path(m, d[:n])] == proof, (m, n)
    for (m, n), proof in CT_CONSISTENCY.items():
        assert [h.hex() for h in consistency(m, d[:n])] == proof, (m, n)
    levels, width = [], 8
    while width >= 1:
        size = 8 // width
        levels.append([mth(d[j * size:(j + 1) * size]).hex() for j in range(width)])
        width //= 2
    return {
        "description": "RFC 6962 §2.1 / RFC 9162 §2.1 Merkle tree over SHA-256 (packages/audit-log/src/merkle.ts): leaf hash = SHA-256(0x00 || entry), node hash = SHA-256(0x01 || left || right), root of the empty tree = SHA-256(''), a tree of n > 1 leaves splits at k = the largest power of two < n. Indexes are 0-based. inclusion[].proof = PATH(index, D[0:tree_size]) (RFC 6962 §2.1.1); consistency[].proof = PROOF(first, D[0:second]) (§2.1.2), empty when first is 0 or equals second.",
        "source": "Leaf inputs, subtree hashes and roots are the Certificate Transparency reference data (transparency-dev/merkle testonly/constants.go), used as data; proofs marked reference: true are its proofs (proof/verify_test.go, there 1-based). The other proofs were computed by vectors/generate.py from RFC 6962's recursive definitions.",
        "leaf_inputs_hex": CT_LEAVES,
        "leaf_hashes_hex": [leaf_hash(x).hex() for x in d],
        "subtree_hashes_hex": levels,
        "roots_hex": [mth(d[:n]).hex() for n in range(9)],
        "inclusion": [
            {"index": m, "tree_size": n, "proof_hex": [h.hex() for h in path(m, d[:n])], **({"reference": True} if (m, n) in CT_INCLUSION else {})}
            for n in range(1, 9) for m in range(n)
        ],
        "consistency": [
            {"first": m, "second": n, "proof_hex": [h.hex() for h in consistency(m, d[:n])], **({"reference": True} if (m, n) in CT_CONSISTENCY else {})}
            for n in range(1, 9) for m in range(n + 1)
        ],
    }


# --- canonical JSON and record lines ------------------------------------------------------------

def canonical_json(v) -> str:
    # Keys sorted (all keys here are ASCII, so code point order = UTF-16 order), no whitespace,
    # non-ASCII characters as they are; json escapes '"', '\\' and U+0000..U+001F as JS does.
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hmac_value(key: bytes, value: str) -> str:
    return "hmac-sha256:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


HMAC_KEY = bytes(range(0x20, 0x40))  # 32 bytes, a test key


def sensitive_vector() -> dict:
    before = {
        "id": "0b7e5c1e-7b5d-4c8e-9d55-000000000003", "time": "2026-12-06T10:00:02.000Z", "source": "coordinator-1",
        "principal": "app", "operation": "keys.Decrypt", "key_id": "k_0123456789abcdef", "ceremony_id": "", "result": "ok",
        "code": "", "request_id": "req-7",
        "details": {"sensitive.account": "acct-7", "tenant": "acme", "region": "eu", "sensitive.empty": ""},
    }
    config = {"fields": ["request_id"], "details": ["tenant"]}
    after = json.loads(json.dumps(before))
    for f in config["fields"]:
        if after[f] != "":
            after[f] = hmac_value(HMAC_KEY, after[f])
    for k, v in after["details"].items():
        if v != "" and (k.startswith("sensitive.") or k in config["details"]):
            after["details"][k] = hmac_value(HMAC_KEY, v)
    values = ["tenant-42", "é✓ 😀", ""]
    return {
        "description": "TEST-ONLY key. Sensitive audit values (packages/audit-log/src/sensitive.ts) are stored as 'hmac-sha256:' + lower-case hex of HMAC-SHA256 (RFC 2104) under the sink's key, over the UTF-8 of the value. Hidden: every non-empty detail whose key starts with 'sensitive.', and the non-empty top-level fields and detail keys listed in the config; empty values stay empty. id, time, source, operation, result and details can never be listed.",
        "key_hex": HMAC_KEY.hex(),
        "values": [{"value": v, "stored": hmac_value(HMAC_KEY, v)} for v in values],
        "apply": {"config": config, "event": before, "stored": after},
    }


def record_vector(sensitive: dict) -> dict:
    events = [
        {
            "id": "0b7e5c1e-7b5d-4c8e-9d55-000000000001", "time": "2026-12-06T10:00:00.000Z", "source": "coordinator-1",
            "principal": "app", "operation": "keys.Encrypt", "key_id": "k_0123456789abcdef", "ceremony_id": "", "result": "ok",
            "code": "", "request_id": "req-1", "details": {"version": "1"},
        },
        {
            "id": "0b7e5c1e-7b5d-4c8e-9d55-000000000002", "time": "2026-12-06T10:00:01.000Z", "source": "coordinator-1",
            "principal": 'o"brien\\ops', "operation": "keys.Decrypt", "key_id": "k_0123456789abcdef", "ceremony_id": "", "result": "denied",
            "code": "PERMISSION_DENIED", "request_id": "",
            "details": {"reason": "line1\nline2\t\u0001", "Zone": "é✓ 😀", "_note": "keys sort by UTF-16 code unit: Z < _ < r"},
        },
        sensitive["apply"]["stored"],
        {
            "id": "0b7e5c1e-7b5d-4c8e-9d55-000000000004", "time": "2026-12-06T10:00:03.000Z", "source": "audit-sink",
            "principal": "audit-sink", "operation": "audit.alert", "key_id": "", "ceremony_id": "", "result": "ok", "code": "",
            "request_id": "", "details": {"rule": "denials", "summary": "5 denied calls by mallory within 60 s", "subject": "mallory", "trigger_index": "1", "count": "5", "threshold": "5"},
        },
    ]
    records, leaves = [], []
    for i, e in enumerate(events):
        entry = canonical_json(e)
        leaf = leaf_hash(entry.encode("utf-8"))
        leaves.append(entry.encode("utf-8"))
        line = '{"index":%d,"leaf":"%s","event":%s}\n' % (i, leaf.hex(), entry)
        records.append({"index": i, "event": e, "entry": entry, "leaf_hash_hex": leaf.hex(), "line": line})
    return {
        "description": "One audit record (packages/audit-log/src/record-format.ts). entry = canonical JSON of the event (keys sorted by UTF-16 code unit, recursively; no whitespace; strings escaped exactly as JSON.stringify / ECMA-262 QuoteJSONString: '\"', '\\\\', \\b \\f \\n \\r \\t, other U+0000..U+001F as \\u00xx lower-case, lone surrogates as \\udxxx, every other character as itself); leaf_hash = SHA-256(0x00 || UTF-8(entry)); line = '{\"index\":' + decimal index + ',\"leaf\":\"' + hex(leaf_hash) + '\",\"event\":' + entry + '}' + LF, in UTF-8. A segment file is the lines of consecutive records, named by the first index as 20 zero-padded digits + '.log'. The log's Merkle tree has record i as leaf i.",
        "records": records,
        "segment_file": {"name": "%020d.log" % 0, "bytes_hex": "".join(r["line"] for r in records).encode("utf-8").hex()},
        "tree_size": len(records),
        "root_hash_hex": mth(leaves).hex(),
    }


# --- checkpoints ----------------------------------------------------------------------------------

# RFC 8032 §7.1 TEST 1: a published test key, never a real one.
ED25519_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def checkpoint_vector(record: dict) -> dict:
    sk = Ed25519PrivateKey.from_private_bytes(ED25519_SEED)
    pk = sk.public_key()
    spki = pk.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = pk.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    key_id = hashlib.sha256(spki).digest()[:8].hex()
    cp = {"tree_size": record["tree_size"], "root_hash": record["root_hash_hex"], "time": "2026-12-06T10:00:04.000Z", "key_id": key_id}
    body = "keyshard/audit/checkpoint/v1\n%s\n%d\n%s\n%s\n" % (cp["key_id"], cp["tree_size"], cp["root_hash"], cp["time"])
    sig = sk.sign(body.encode("utf-8"))
    signed = {**cp, "signature": base64.b64encode(sig).decode()}
    line = json.dumps({k: signed[k] for k in ["tree_size", "root_hash", "time", "key_id", "signature"]}, separators=(",", ":")) + "\n"
    return {
        "description": "TEST-ONLY key (RFC 8032 §7.1 TEST 1). A signed checkpoint of the audit log (packages/audit-log/src/checkpoint.ts): body = 'keyshard/audit/checkpoint/v1' LF key_id LF decimal tree_size LF root_hash (64 lower-case hex) LF time (RFC 3339, as given) LF, in UTF-8; signature = Ed25519 (RFC 8032, pure) over the body, base64; key_id = lower-case hex of the first 8 bytes of SHA-256 over the public key's SubjectPublicKeyInfo DER (RFC 8410). stored_line is the checkpoint's line in checkpoints.log. Not the C2SP tlog-checkpoint / signed-note format (see VECTORS.md). This checkpoint signs the tree of record.json.",
        "ed25519_seed_hex": ED25519_SEED.hex(),
        "public_key_spki_der_hex": spki.hex(),
        "public_key_pem": pem,
        "checkpoint": signed,
        "body": body,
        "body_hex": body.encode("utf-8").hex(),
        "stored_line": line,
    }


# --- witness cosignatures (C2SP tlog-checkpoint, tlog-cosignature v1, signed-note vkeys) ----------

# RFC 8032 §7.1 TEST 2: a published test key, never a real one.
WITNESS_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
WITNESS_NAME = "keyshard.dev/witness/coordinator-1"
COSIGNATURE_TIME = 1796551204  # 2026-12-06T10:00:04Z, whole seconds


def cosignature_vector(checkpoint: dict) -> dict:
    cp = checkpoint["checkpoint"]
    origin = "keyshard.dev/audit/" + cp["key_id"]
    note = "%s\n%d\n%s\n" % (origin, cp["tree_size"], base64.b64encode(bytes.fromhex(cp["root_hash"])).decode())
    sk = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = sha256(WITNESS_NAME.encode(), b"\n\x04", pub)[:4]
    vkey = "%s+%s+%s" % (WITNESS_NAME, key_id.hex(), base64.b64encode(b"\x04" + pub).decode())
    message = ("cosignature/v1\ntime %d\n" % COSIGNATURE_TIME + note).encode("utf-8")
    sig = sk.sign(message)
    line = "\u2014 %s %s" % (WITNESS_NAME, base64.b64encode(key_id + COSIGNATURE_TIME.to_bytes(8, "big") + sig).decode())
    return {
        "description": "TEST-ONLY witness key (RFC 8032 §7.1 TEST 2). A witness cosignature (packages/audit-log/src/cosignature.ts) of the checkpoint of checkpoint.json: note = C2SP tlog-checkpoint body (origin 'keyshard.dev/audit/' + sink key_id, decimal tree size, base64 root hash, each line LF-terminated); signed message = 'cosignature/v1' LF 'time ' decimal seconds LF note (C2SP tlog-cosignature v1, Ed25519); key_id = SHA-256(name LF 0x04 public key)[:4]; line = EM DASH, space, name, space, base64(key_id || u64 big-endian time || signature) (C2SP signed-note); vkey = name '+' hex key_id '+' base64(0x04 || public key).",
        "ed25519_seed_hex": WITNESS_SEED.hex(),
        "public_key_hex": pub.hex(),
        "name": WITNESS_NAME,
        "timestamp": COSIGNATURE_TIME,
        "checkpoint": cp,
        "note": note,
        "signed_message_hex": message.hex(),
        "key_id_hex": key_id.hex(),
        "vkey": vkey,
        "cosignature": line,
    }


# --- what a verifier is given from outside the log folder (trust file, cosigned files) --------------

def trust_vector(checkpoint: dict, cosig: dict) -> dict:
    trust = {"sinkKeys": [checkpoint["public_key_pem"]], "witnesses": [cosig["vkey"]], "witnessQuorum": 1}
    cosigned = {"checkpoint": cosig["checkpoint"], "note": cosig["note"], "cosignatures": [cosig["cosignature"]]}
    bare = {"checkpoint": cosig["checkpoint"], "note": cosig["note"], "cosignatures": []}
    line = lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False) + "\n"
    pretty = lambda v: json.dumps(v, indent=2, ensure_ascii=False) + "\n"
    return {
        "description": "TEST-ONLY keys (those of checkpoint.json and cosignature.json). The trust file an auditor keeps outside the log folder (packages/audit-log/src/trust.ts): a JSON object with exactly sinkKeys (SPKI PEMs of the sink's checkpoint keys), witnesses (signed-note vkeys) and witnessQuorum, written as JSON with 2-space indentation and a final LF. A cosigned checkpoint (VECTORS.md section 7) as a file `keyshard audit verify --cosigned` reads: one JSON object, a JSON array, or JSON lines (one object a line); cosigned_log_line is a line of <log dir>/cosigned.log (compact JSON, checkpoint fields in stored order, LF). The log directory of record.json + checkpoint.json verifies under trust_file with cosigned: every anchor matches, one witness of one required vouches.",
        "trust_file": pretty(trust),
        "sink_key_id": checkpoint["checkpoint"]["key_id"],
        "witness_name": cosig["name"],
        "witness_quorum": 1,
        "cosigned": cosigned,
        "cosigned_object": pretty(cosigned),
        "cosigned_array": pretty([cosigned, bare]),
        "cosigned_lines": line(cosigned) + line(bare),
        "cosigned_log_line": line(cosigned),
    }


def build() -> dict:
    sensitive = sensitive_vector()
    record = record_vector(sensitive)
    checkpoint = checkpoint_vector(record)
    cosignature = cosignature_vector(checkpoint)
    return {
        "merkle.json": merkle_vector(),
        "sensitive.json": sensitive,
        "record.json": record,
        "checkpoint.json": checkpoint,
        "cosignature.json": cosignature,
        "trust.json": trust_vector(checkpoint, cosignature),
    }


def main(argv: list) -> int:
    check = "--check" in argv
    differ = []
    for name, doc in build().items():
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        path = os.path.join(HERE, name)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    same = f.read() == text
            except FileNotFoundError:
                same = False
            if not same:
                differ.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if differ:
        print("differ from the generator: " + ", ".join(differ), file=sys.stderr)
        return 1
    print("checked" if check else "written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
