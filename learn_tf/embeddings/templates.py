"""Prompt templates that render an item's canonical fields into LLM input text."""

from __future__ import annotations

import string
from typing import Mapping

from learn_tf.data.schema import ITEM_TEXT_FIELDS

# Named templates; a config may also give a literal template with {field} placeholders.
TEMPLATES: dict[str, str] = {
    # Official LEARN Amazon code.
    "learn_amazon": "Title: {title}. Brand: {brand}. Category: {category}",
    # The LEARN paper's industrial prompt (fields mapped onto the canonical schema).
    "learn_industrial": (
        'The item information is given as follows. Item title is "{title}". '
        'This item belongs to "{category}" and brand is "{brand}". The price is "{price}". '
        'Item description is "{description}".'
    ),
    # MovieLens: title, release year, genres.
    "movielens": "Title: {title}. Year: {year}. Genres: {genres}.",
}


class TemplateError(ValueError):
    """A template is malformed or references a field items do not have."""


def resolve_template(name_or_text: str) -> str:
    """The template text for a registered name, or the literal template itself."""
    return TEMPLATES.get(name_or_text, name_or_text)


def template_fields(template: str) -> tuple[str, ...]:
    """The `{field}` names a template uses, in order.

    Raises:
      TemplateError: malformed braces, positional or formatted fields, or a
        field that is not a canonical item field.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(f"template {template!r} is malformed: {e}") from e
    fields = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit() or spec or conv:
            raise TemplateError(f"template {template!r}: use plain named fields like {{title}}")
        if name not in ITEM_TEXT_FIELDS:
            raise TemplateError(
                f"template {template!r} references unknown field {{{name}}}; "
                f"known fields: {', '.join(ITEM_TEXT_FIELDS)}"
            )
        fields.append(name)
    if not fields:
        raise TemplateError(f"template {template!r} uses no item field")
    return tuple(fields)


def render(template: str, item: Mapping[str, object]) -> tuple[str, tuple[str, ...]]:
    """Renders `template` for one item.

    Args:
      template: template text (see `resolve_template`).
      item: a mapping with the canonical item fields (missing or None = empty).

    Returns:
      (text, missing): the rendered text with surrounding whitespace removed,
      and the fields that were empty (rendered as "").
    """
    fields = template_fields(template)
    values = {}
    missing = []
    for name in fields:
        v = item.get(name)
        v = "" if v is None else str(v)
        if not v.strip():
            missing.append(name)
        values[name] = v
    return template.format(**values).strip(), tuple(dict.fromkeys(missing))


def text_columns(template: str) -> list[str]:
    """The item columns `item_text` reads: item_id, title (the fallback) and the template's fields."""
    return ["item_id", "title", *[f for f in template_fields(template) if f != "title"]]


def item_text(template: str, row: Mapping[str, object]) -> tuple[str, tuple[str, ...], bool]:
    """The text embedded for one item: (text, empty fields, whether the title fallback was used).

    When every template field is empty the title stands in (ingestion
    guarantees one), else "Item <id>".
    """
    text, missing = render(template, row)
    if not text.strip() or set(missing) == set(template_fields(template)):
        return str(row.get("title") or f"Item {row['item_id']}"), missing, True
    return text, missing, False
