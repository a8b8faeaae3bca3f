"""Checks recorded sluice messages against the published contract, as an
outside program would: the JSON Schemas and the catalog in
shared/messages/schema, read by Python's `jsonschema`, not by sluice's code.

    check_messages.py SCHEMA_DIR NAMESPACE RECORDED.jsonl

RECORDED.jsonl holds one message per line: {"subject", "headers": {name:
[values]}, "body": text}. Prints one JSON object: how many messages of
each kind (and fact) passed. Exits 1 listing every violation.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

from jsonschema import Draft202012Validator


def strict_keys(schema: dict, body, where: str, errors: list) -> None:
    """A producer may not put fields in a message that its schema does not
    name: readers would depend on undocumented fields."""
    if not isinstance(body, dict):
        return
    candidates = [schema]
    if "oneOf" in schema:
        candidates = [s for s in schema["oneOf"] if all(
            body.get(k) == v.get("const") for k, v in s.get("properties", {}).items() if "const" in v)]
    known = set()
    for candidate in candidates:
        known |= set(candidate.get("properties", {}))
    extra = sorted(set(body) - known)
    if extra:
        errors.append(f"{where}: fields not in the schema: {extra}")


def subject_pattern(pattern: str, namespace: str) -> re.Pattern:
    """`transactions.<account_id>` → a regex capturing each `<…>` token."""
    prefix = re.escape(namespace + ".") if namespace else ""
    parts = []
    for token in pattern.split("."):
        if token.startswith("<"):
            parts.append("(?P<%s>[^.]+)" % re.sub(r"\W", "_", token.strip("<>")))
        else:
            parts.append(re.escape(token))
    return re.compile("^" + prefix + r"\.".join(parts) + "$")


def main() -> int:
    schema_dir, namespace, recorded = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    catalog = json.loads((schema_dir / "messages.json").read_text())
    kinds = []
    for kind in catalog["messages"]:
        schema = json.loads((schema_dir / kind["schema"]).read_text())
        Draft202012Validator.check_schema(schema)
        kinds.append((kind, subject_pattern(kind["subject"], namespace), schema, Draft202012Validator(schema)))

    errors: list[str] = []
    seen: Counter = Counter()
    for number, line in enumerate(recorded.read_text().splitlines(), 1):
        message = json.loads(line)
        subject, headers, text = message["subject"], message["headers"], message["body"]
        where = f"message {number} on {subject}"
        matches = [(k, m, s, v) for k, p, s, v in kinds if (m := p.match(subject))]
        if len(matches) != 1:
            errors.append(f"{where}: no message kind of the catalog has this subject")
            continue
        kind, match, schema, validator = matches[0]
        tokens = match.groupdict()
        if kind["name"] == "import-request" and not text.lstrip().startswith("{"):
            # The plain-text form: the URL alone.
            if not text.strip() or any(c.isspace() for c in text.strip()):
                errors.append(f"{where}: a plain-text import request must be one URL")
            seen["import-request (plain text)"] += 1
            continue
        try:
            body = json.loads(text)
        except ValueError as e:
            errors.append(f"{where}: body is not JSON: {e}")
            continue
        problems = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        errors.extend(f"{where}: {'/'.join(map(str, e.path)) or 'body'}: {e.message}" for e in problems)
        strict_keys(schema, body, where, errors)

        if kind["name"] != "import-request" and not headers.get("Nats-Msg-Id"):
            errors.append(f"{where}: no Nats-Msg-Id")
        for header in kind["headers"]:
            values = headers.get(header)
            if not values:
                errors.append(f"{where}: no {header} header")
            elif header == "Sluice-Import-Id" and isinstance(body, dict) \
                    and body.get("import_id") not in (None, values[0]):
                errors.append(f"{where}: {header} {values[0]!r} but body import_id {body.get('import_id')!r}")
        # Tokens of the subject repeat fields of the body.
        for token, field in (("import_id", "import_id"), ("account_id", "account_id"), ("fact", "fact")):
            if token in tokens and str(body.get(field)) != tokens[token]:
                errors.append(f"{where}: subject says {token} {tokens[token]!r}, body {body.get(field)!r}")
        if "stage" in tokens and body.get("stage") != tokens["stage"]:
            errors.append(f"{where}: subject says stage {tokens['stage']!r}, body {body.get('stage')!r}")
        label = kind["name"]
        if kind["name"] == "import-progress":
            label += "." + body.get("fact", "?")
        if kind["name"] == "dead-letter":
            label += "." + body.get("kind", "?")
        seen[label] += 1

    print(json.dumps(dict(sorted(seen.items()))))
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
