"""Tests for prompt templates."""

import pytest

from learn_tf.embeddings.templates import (
    TEMPLATES, TemplateError, item_text, render, resolve_template, template_fields, text_columns)


def test_named_templates_resolve_and_use_known_fields():
    for name, text in TEMPLATES.items():
        assert resolve_template(name) == text
        assert template_fields(text)
    assert resolve_template("Title: {title}") == "Title: {title}"


def test_render_counts_missing_fields():
    text, missing = render(resolve_template("learn_amazon"), {"title": "Beaker", "brand": "", "category": None})
    assert text == "Title: Beaker. Brand: . Category:"
    assert missing == ("brand", "category")
    text, missing = render("Title: {title}. Year: {year}. Genres: {genres}.",
                           {"title": "Toy Story", "year": "1995", "genres": "Animation, Comedy"})
    assert text == "Title: Toy Story. Year: 1995. Genres: Animation, Comedy." and missing == ()


@pytest.mark.parametrize("bad, msg", [
    ("Title: {name}", "unknown field {name}"),
    ("Title: {}", "plain named fields"),
    ("Title: {title:>10}", "plain named fields"),
    ("Title: {title", "malformed"),
    ("no fields at all", "uses no item field"),
])
def test_bad_templates(bad, msg):
    with pytest.raises(TemplateError, match=msg):
        template_fields(bad)


def test_item_text_falls_back_to_title_then_id():
    tmpl = resolve_template("movielens")
    assert item_text(tmpl, {"item_id": "1", "title": "Heat", "year": "1995", "genres": ""}) == (
        "Title: Heat. Year: 1995. Genres: .", ("genres",), False)
    assert item_text("Genres: {genres}", {"item_id": "1", "title": "Heat", "genres": ""}) == (
        "Heat", ("genres",), True)
    assert item_text("Genres: {genres}", {"item_id": "7", "title": "", "genres": None})[0] == "Item 7"
    assert text_columns(tmpl) == ["item_id", "title", "year", "genres"]
