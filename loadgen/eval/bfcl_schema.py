"""BFCL function docs -> OpenAI tool definitions, as bfcl-eval's OpenAI Completions handler
builds them (bfcl_eval/model_handler/utils.py: `convert_to_tool` with GORILLA_TO_OPENAPI and
ModelStyle.OPENAI_COMPLETIONS; `_func_doc_language_specific_pre_processing` for the hint).

A port, so that the project's side needs no bfcl-eval: `inloop eval bfcl` checks it against
the package's own conversion on every item it runs, and the tests against outputs of
bfcl-eval 2026.3.23 copied as fixtures. BFCL's quirks are kept on purpose (a "float" gets
`format: float` and a sentence in its description; an unknown type becomes "string";
dots in a function's name become underscores, since OpenAI names allow none).
"""
from __future__ import annotations

import copy
import re

# bfcl_eval/constants/type_mappings.py GORILLA_TO_OPENAPI
GORILLA_TO_OPENAPI = {
    "integer": "integer", "number": "number", "float": "number", "string": "string",
    "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array", "dict": "object",
    "object": "object", "tuple": "array", "any": "string", "byte": "integer", "short": "integer",
    "long": "integer", "double": "number", "char": "string", "ArrayList": "array", "Array": "array",
    "HashMap": "object", "Hashtable": "object", "Queue": "array", "Stack": "array", "Any": "string",
    "String": "string", "Bigint": "integer",
}
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."


def with_python_hint(functions: list[dict]) -> list[dict]:
    """What BFCL's loader does to a Python category's docs before any handler sees them."""
    out = copy.deepcopy(functions)
    for fn in out:
        fn["description"] = fn["description"] + PYTHON_HINT
    return out


def _cast_types(properties: dict) -> dict:
    """bfcl's `_cast_to_openai_type`, step for step (it mutates and returns `properties`)."""
    for value in properties.values():
        if "type" not in value:
            value["type"] = "string"
        else:
            var_type = value["type"]
            if var_type == "float":
                value["format"] = "float"
                value["description"] += " This is a float type value."
            value["type"] = GORILLA_TO_OPENAPI.get(var_type, "string")
        # BFCL covers: list of any, list of list of any, list of dict, list of list of dict, dict of any
        if value["type"] in ("array", "object"):
            if "properties" in value:
                value["properties"] = _cast_types(value["properties"])
            elif "items" in value:
                items = value["items"]
                items["type"] = GORILLA_TO_OPENAPI[items["type"]]
                if items["type"] == "array" and "items" in items:
                    items["items"]["type"] = GORILLA_TO_OPENAPI[items["items"]["type"]]
                elif items["type"] == "object" and "properties" in items:
                    items["properties"] = _cast_types(items["properties"])
    return properties


def to_openai_tools(functions: list[dict]) -> list[dict]:
    """BFCL function docs (with the hint already added) -> [{"type": "function", "function": ...}]."""
    tools = []
    for fn in copy.deepcopy(functions):
        if "." in fn["name"]:
            fn["name"] = re.sub(r"\.", "_", fn["name"])
        fn["parameters"]["type"] = "object"
        fn["parameters"]["properties"] = _cast_types(fn["parameters"]["properties"])
        tools.append({"type": "function", "function": fn})
    return tools
