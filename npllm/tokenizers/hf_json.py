"""Hugging Face's ``tokenizer.json`` for byte-level BPE ↔ the options of :class:`npllm.tokenizers.BPETokenizer`.

The ``tokenizers`` library describes a tokenizer as a pipeline (https://huggingface.co/docs/tokenizers/
pipeline): added tokens are cut out of the text whole, the rest is normalized, pre-tokenized into
chunks, each chunk is encoded by the model, and a post-processor may add special tokens around the
result.  For the byte-level BPE files of GPT-2, RoBERTa, Llama 3, Qwen2 and Mistral's newer models this
module reads each stage into plain values the tokenizer applies itself:

* ``added_tokens`` → ``special_tokens`` (content → id; every added token, special or not, is matched
  whole before pre-tokenisation and never split) and ``added_options`` (``lstrip``/``rstrip``/``single_word``);
* ``normalizer``: null, or Unicode normalization (NFC, NFD, NFKC, NFKD, possibly in a ``Sequence``);
* ``pre_tokenizer`` → ``pre_tokenizer`` steps: ``Split`` with a ``Regex`` or ``String`` pattern and its
  behavior (isolated, removed, merged_with_previous, merged_with_next, contiguous; ``invert``),
  ``Digits``, ``ByteLevel`` (``use_regex`` true means GPT-2's regex; ``add_prefix_space``), or a
  ``Sequence`` of them;
* ``model``: ``BPE`` with ``vocab``, ``merges`` (the string form "a b" or the pair form ["a", "b"]) and
  ``ignore_merges`` (a chunk that is itself in the vocabulary is one token, merges or not);
* ``post_processor``: ``TemplateProcessing`` / ``RobertaProcessing`` → the ids ``encode(text,
  add_special_tokens=True)`` puts before and after (``ByteLevel`` adds none).
Anything else (another model type, byte fallback, a Metaspace pre-tokenizer, a replacing normalizer)
is one :class:`CheckpointError` naming the field.  The decoder is not read: byte-level BPE decodes by
joining the tokens' bytes.

This module works on dicts only and never imports npllm.tokenizers (which imports it).
"""
from __future__ import annotations

from npllm.errors import CheckpointError

# GPT-2's pre-tokenisation regex (what ByteLevel's use_regex applies).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_PRE_TOKENIZER = [{"type": "split", "pattern": GPT2_PATTERN, "behavior": "isolated", "invert": False}]
BEHAVIORS = {"Isolated": "isolated", "Removed": "removed", "MergedWithPrevious": "merged_with_previous",
             "MergedWithNext": "merged_with_next", "Contiguous": "contiguous"}
NORMALIZATIONS = ("NFC", "NFD", "NFKC", "NFKD")


def _object(value, field: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: {field} must be a JSON object, got {type(value).__name__}")
    return value


def _unsupported(where: str, field: str, value) -> CheckpointError:
    return CheckpointError(f"{where}: unsupported {field} {str(value)[:60]!r}: npllm reads byte-level BPE "
                           "tokenizers (see npllm.tokenizers.hf_json.py)")


def _normalizer(node, where: str) -> str | None:
    """null → None; NFC/NFD/NFKC/NFKD (alone or a Sequence of one) → its name."""
    if node is None:
        return None
    kind = _object(node, "normalizer", where).get("type")
    if kind == "Sequence":
        forms = [_normalizer(step, where) for step in node.get("normalizers") or []]
        forms = [form for form in forms if form is not None]
        if len(forms) > 1:
            raise _unsupported(where, "normalizer.normalizers", forms)
        return forms[0] if forms else None
    if kind not in NORMALIZATIONS:
        raise _unsupported(where, "normalizer.type", kind)
    return kind


def _pre_tokenizer(node, where: str) -> list[dict]:
    """The pre-tokenizer as npllm's steps: {"type": "split", pattern, behavior, invert} or {"type": "prefix_space"}."""
    if node is None:
        return []
    kind = _object(node, "pre_tokenizer", where).get("type")
    if kind == "Sequence":
        return [step for child in node.get("pretokenizers") or [] for step in _pre_tokenizer(child, where)]
    if kind == "ByteLevel":
        steps = [{"type": "prefix_space"}] if node.get("add_prefix_space", False) else []
        return steps + (GPT2_PRE_TOKENIZER if node.get("use_regex", True) else [])
    if kind == "Digits":
        pattern = r"\p{N}" if node.get("individual_digits", False) else r"\p{N}+"
        return [{"type": "split", "pattern": pattern, "behavior": "isolated", "invert": False}]
    if kind == "Split":
        pattern = _object(node.get("pattern"), "pre_tokenizer.pattern", where)
        if "Regex" in pattern and isinstance(pattern["Regex"], str):
            text = pattern["Regex"]
        elif "String" in pattern and isinstance(pattern["String"], str):
            import regex
            text = regex.escape(pattern["String"])
        else:
            raise _unsupported(where, "pre_tokenizer.pattern", pattern)
        if node.get("behavior") not in BEHAVIORS:
            raise _unsupported(where, "pre_tokenizer.behavior", node.get("behavior"))
        return [{"type": "split", "pattern": text, "behavior": BEHAVIORS[node["behavior"]],
                 "invert": bool(node.get("invert", False))}]
    raise _unsupported(where, "pre_tokenizer.type", kind)


def _template(node, special: dict[str, int], where: str) -> dict | None:
    """The ids the post-processor puts around a single sequence: {"prefix": [...], "suffix": [...]}."""
    if node is None:
        return None
    kind = _object(node, "post_processor", where).get("type")
    if kind == "ByteLevel":
        return None
    if kind == "Sequence":
        templates = [t for t in (_template(step, special, where) for step in node.get("processors") or []) if t]
        if len(templates) > 1:
            raise _unsupported(where, "post_processor.processors", [step.get("type") for step in node["processors"]])
        return templates[0] if templates else None
    if kind == "RobertaProcessing":
        try:
            return {"prefix": [int(node["cls"][1])], "suffix": [int(node["sep"][1])]}
        except (KeyError, IndexError, TypeError, ValueError):
            raise CheckpointError(f"{where}: post_processor cls and sep must be [token, id] pairs") from None
    if kind != "TemplateProcessing":
        raise _unsupported(where, "post_processor.type", kind)
    ids = {"prefix": [], "suffix": []}
    side = "prefix"
    tokens = node.get("special_tokens") or {}
    for item in node.get("single") or []:
        if "Sequence" in item:
            side = "suffix"
            continue
        name = (item.get("SpecialToken") or {}).get("id")
        listed = (tokens.get(name) or {}).get("ids")
        if isinstance(listed, list) and all(isinstance(i, int) for i in listed):
            ids[side].extend(listed)
        elif name in special:
            ids[side].append(special[name])
        else:
            raise CheckpointError(f"{where}: post_processor names the special token {str(name)[:40]!r}, which "
                                  "is not an added token")
    return ids if ids["prefix"] or ids["suffix"] else None


def _merges(merges, where: str) -> list[tuple[str, str]]:
    """Merges in either form ("a b" or ["a", "b"]) as pairs, in rank order."""
    if not isinstance(merges, list):
        raise CheckpointError(f"{where}: model.merges must be a list, got {type(merges).__name__}")
    pairs = []
    for rank, merge in enumerate(merges):
        if isinstance(merge, str) and merge.count(" ") == 1:
            pairs.append(tuple(merge.split(" ")))
        elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(part, str) for part in merge):
            pairs.append((merge[0], merge[1]))
        else:
            raise CheckpointError(f"{where}: model.merges[{rank}] must be \"left right\" or [left, right], got "
                                  f"{str(merge)[:60]!r}")
    return pairs


def parse(document, where: str) -> dict:
    """A tokenizer.json dict → keyword arguments: vocab (text → id, added tokens included), merges
    (pairs), special_tokens, added_options, pre_tokenizer, normalizer, ignore_merges, template."""
    document = _object(document, "the file", where)
    model = _object(document.get("model"), "model", where)
    if model.get("type", "BPE") != "BPE":
        raise _unsupported(where, "model.type", model.get("type"))
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise _unsupported(where, f"model.{key}", model[key])
    if model.get("byte_fallback"):
        raise _unsupported(where, "model.byte_fallback", True)
    if model.get("dropout") not in (None, 0, 0.0):
        raise _unsupported(where, "model.dropout", model["dropout"])
    vocab = _object(model.get("vocab"), "model.vocab", where)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in vocab.values()):
        raise CheckpointError(f"{where}: model.vocab ids must be non-negative ints")
    vocab, used = dict(vocab), set(vocab.values())
    special, options = {}, {}
    for index, token in enumerate(document.get("added_tokens") or []):
        token = _object(token, f"added_tokens[{index}]", where)
        content, token_id = token.get("content"), token.get("id")
        if not isinstance(content, str) or not content or not isinstance(token_id, int) or isinstance(token_id, bool):
            raise CheckpointError(f"{where}: added_tokens[{index}] needs a non-empty content and an int id")
        if vocab.get(content, token_id) != token_id or (token_id in used and vocab.get(content) != token_id):
            raise CheckpointError(f"{where}: added token {content[:40]!r} has id {token_id}, which model.vocab gives "
                                  "to another token")
        vocab[content], special[content] = token_id, token_id
        used.add(token_id)
        flags = {key: True for key in ("lstrip", "rstrip", "single_word") if token.get(key)}
        if flags:
            options[content] = flags
    pre_tokenizer = _pre_tokenizer(document.get("pre_tokenizer"), where)
    return {"vocab": vocab, "merges": _merges(model.get("merges", []), where), "special_tokens": special,
            "added_options": options, "pre_tokenizer": pre_tokenizer,
            "normalizer": _normalizer(document.get("normalizer"), where),
            "ignore_merges": bool(model.get("ignore_merges", False)),
            "template": _template(document.get("post_processor"), special, where)}


def build(vocab: dict[str, int], merges: list[tuple[str, str]], special_tokens: dict[str, int],
          added_options: dict, pre_tokenizer: list[dict], normalizer: str | None, ignore_merges: bool,
          template: dict | None) -> dict:
    """The tokenizer.json dict of these options (the inverse of :func:`parse`); vocab holds byte-level
    text for every token but the added ones."""
    added = [{"id": i, "content": text, "single_word": text in added_options and
              added_options[text].get("single_word", False),
              "lstrip": added_options.get(text, {}).get("lstrip", False),
              "rstrip": added_options.get(text, {}).get("rstrip", False), "normalized": False, "special": True}
             for text, i in sorted(special_tokens.items(), key=lambda item: item[1])]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    if pre_tokenizer == GPT2_PRE_TOKENIZER:
        pre = {**byte_level, "use_regex": True}
    else:
        steps = []
        for step in pre_tokenizer:
            if step["type"] == "prefix_space":
                steps.append({**byte_level, "add_prefix_space": True})
            else:
                behavior = next(name for name, value in BEHAVIORS.items() if value == step["behavior"])
                steps.append({"type": "Split", "pattern": {"Regex": step["pattern"]}, "behavior": behavior,
                              "invert": step["invert"]})
        pre = {"type": "Sequence", "pretokenizers": steps + [byte_level]}
    post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    if template:
        names = {i: text for text, i in special_tokens.items()}
        single = ([{"SpecialToken": {"id": names[i], "type_id": 0}} for i in template["prefix"]]
                  + [{"Sequence": {"id": "A", "type_id": 0}}]
                  + [{"SpecialToken": {"id": names[i], "type_id": 0}} for i in template["suffix"]])
        used = sorted(set(template["prefix"]) | set(template["suffix"]))
        post = {"type": "Sequence", "processors": [post, {
            "type": "TemplateProcessing", "single": single, "pair": single,
            "special_tokens": {names[i]: {"id": names[i], "ids": [i], "tokens": [names[i]]} for i in used}}]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None if normalizer is None else {"type": normalizer}, "pre_tokenizer": pre,
            "post_processor": post, "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                                                "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": ignore_merges,
                      "vocab": {text: i for text, i in vocab.items() if text not in special_tokens},
                      "merges": [[left, right] for left, right in merges]}}
