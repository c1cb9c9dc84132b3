"""Webhook templates behave like Go's text/template did in Keptn's webhook-service, within bounds."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.formats import gotemplate as wt

EVENT: dict[str, Any] = {
    "id": "e-1",
    "type": "sh.keptn.event.mytask.triggered",
    "shkeptncontext": "ctx-1",
    "data": {
        "project": "fulltour",
        "stage": "qa",
        "service": "helloservice",
        "result": "pass",
        "evaluation": {"score": 87.5, "result": "pass", "count": 3},
        "deployment": {"deploymentURIsPublic": ["http://helloservice.fulltour-qa"]},
        "incident-tool": {"url": "https://tickets.example.com"},
        "labels": {"version": "v0.1.1", "image": "podtato"},
        "nothing": None,
        "items": [1, 2, 3],
    },
    "env": wt.SecretMap({"token": "s3cr3t-token"}),
}


def render(text: str, data: dict[str, Any] = EVENT) -> str:
    return wt.parse(text).render(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{.data.project}}/{{.data.stage}}", "fulltour/qa"),
        ("{{.shkeptncontext}} {{.id}} {{.type}}", "ctx-1 e-1 sh.keptn.event.mytask.triggered"),
        ('{{index .data "incident-tool" | printf "%v"}}', '{"url":"https://tickets.example.com"}'),
        ('{{(index .data "incident-tool").url}}', "https://tickets.example.com"),
        ("{{index .data.deployment.deploymentURIsPublic 0}}", "http://helloservice.fulltour-qa"),
        (
            "{{if index .data.deployment.deploymentURIsPublic 0}}{{index .data.deployment.deploymentURIsPublic 0}}"
            "{{else}}No deployment URL provided{{end}}",
            "http://helloservice.fulltour-qa",
        ),
        ('{{if .data.nothing}}x{{else if eq .data.stage "qa"}}qa{{else}}other{{end}}', "qa"),
        ("{{with .data.evaluation}}{{.score}}/{{.count}}{{end}}", "87.5/3"),
        ("{{range $i, $x := .data.items}}{{$i}}:{{$x}} {{end}}", "0:1 1:2 2:3 "),
        ("{{range $k, $v := .data.labels}}{{$k}}={{$v}};{{end}}", "image=podtato;version=v0.1.1;"),
        ("{{range .data.nothing}}x{{else}}empty{{end}}", "empty"),
        ('{{with .data.nothing}}x{{else if eq .data.stage "qa"}}qa{{else}}other{{end}}', "qa"),
        ("{{range .data.nothing}}x{{else with .data.evaluation}}{{.count}}{{end}}", "3"),
        ("{{$p := .data.project}}{{$p}}-{{$.data.stage}}", "fulltour-qa"),
        ('{{printf "%.1f%%" .data.evaluation.score}}', "87.5%"),
        ("{{len .data.items}} {{len .data.project}}", "3 8"),
        (
            '{{and .data.project .data.stage}} {{or .data.nothing "fallback"}} {{not .data.nothing}}',
            "qa fallback true",
        ),
        ("{{gt .data.evaluation.score 80}} {{lt .data.evaluation.count 3}}", "true false"),
        ('{{urlquery "a b&c"}} {{html "<b>"}} {{js "it\'s"}}', "a+b%26c &lt;b&gt; it\\'s"),
        ("a  {{- /* a comment */ -}}  b", "ab"),
        ("{{.data.nothing}}", "<no value>"),
        ("{{.data.labels}}", '{"image":"podtato","version":"v0.1.1"}'),
        ("{{1e21}} {{0.00001}} {{100.0}} {{.data.evaluation.score}}", "1e+21 1e-05 100 87.5"),
        ('{{print "a" 1 2 "b"}}', "a1 2b"),
        ("{{slice .data.items 1 2}}", "[2]"),
    ],
)
def test_templates_render_as_go_did(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{.data.my-key}}", "needs index"),
        ("{{toJson .data}}", 'function "toJson" not defined'),
        ("{{id}}", 'function "id" not defined'),
        ("{{if .data.project}}x", "unclosed {{if}}"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{.data.project", "unclosed action"),
        ('{{define "x"}}{{end}}', "{{define}} is not supported"),
        ("{{.data.project | .data.stage}}", "non-function"),
        ('{{"unterminated}}', "unterminated"),
    ],
)
def test_template_mistakes_are_parse_errors_with_a_position(text: str, message: str) -> None:
    with pytest.raises(wt.TemplateError) as caught:
        wt.parse(text)
    assert message in str(caught.value)
    assert 0 <= caught.value.offset <= len(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{.data.missing}}", 'map has no entry for key "missing"'),
        ("{{if .data.missing}}x{{end}}", 'map has no entry for key "missing"'),
        ("{{.data.nothing.deeper}}", "nil pointer evaluating"),
        ("{{.data.project.deeper}}", "can't evaluate field deeper in type string"),
        ("{{index .data.items 7}}", "index out of range"),
        ("{{range .data.project}}{{end}}", "range can't iterate over string"),
        ("{{eq .data.project 1}}", "incompatible types"),
    ],
)
def test_missing_data_is_an_error_like_missingkey_error(text: str, message: str) -> None:
    with pytest.raises(wt.RenderError) as caught:
        render(text)
    assert message in str(caught.value)


def test_index_of_a_missing_key_is_empty_not_an_error() -> None:
    """Go's index returns the zero value for a missing map key, so docs used it for optional fields."""
    assert render('{{if index .data "ticket"}}yes{{else}}no{{end}}') == "no"


def test_render_errors_never_show_values() -> None:
    with pytest.raises(wt.RenderError) as caught:
        render("{{.env.token.x}}")
    assert "s3cr3t-token" not in str(caught.value)


def test_values_read_through_env_are_marked_secret_wherever_they_flow() -> None:
    seen: list[tuple[str, bool]] = []

    def emit(value: Any, secret: bool, action: wt.Action) -> str:
        seen.append((wt.go_print(value), secret))
        return "***" if secret else wt.go_print(value)

    out = wt.parse(
        '{{.data.project}} {{.env.token}} {{printf "Bearer %s" .env.token}} {{index .env "token"}} '
        "{{$t := .env.token}}{{$t}} {{.}}"
    ).render(EVENT, emit)
    assert "s3cr3t-token" not in out
    assert [secret for _, secret in seen] == [False, True, True, True, True, True]


def test_a_range_over_a_huge_list_stops_at_the_step_bound() -> None:
    data = {"data": {"items": list(range(wt.MAX_STEPS * 2))}}
    with pytest.raises(wt.RenderError, match="steps"):
        wt.parse("{{range .data.items}}{{.}}{{end}}").render(data)


def test_output_is_bounded() -> None:
    data = {"data": {"big": "x" * 1000, "items": list(range(100))}}
    with pytest.raises(wt.RenderError, match="longer than"):
        wt.parse("{{range .data.items}}{{$.data.big}}{{end}}").render(data, max_output=50_000)


def test_deep_nesting_is_refused_at_parse_time() -> None:
    text = "{{if .a}}" * (wt.MAX_NESTING + 1) + "{{end}}" * (wt.MAX_NESTING + 1)
    with pytest.raises(wt.TemplateError, match="nested deeper"):
        wt.parse(text)
    parens = "{{" + "(" * (wt.MAX_NESTING + 2) + ".a" + ")" * (wt.MAX_NESTING + 2) + "}}"
    with pytest.raises(wt.TemplateError, match="nested deeper"):
        wt.parse(parens)


def test_references_list_root_paths_for_static_checks() -> None:
    template = wt.parse(
        '{{.data.project}}{{index .env "token"}}{{$.id}}{{with .data}}{{.relative}}{{end}}{{index .env .data.k}}'
    )
    paths = [(r.path, r.dynamic) for r in template.references()]
    assert (("data", "project"), False) in paths
    assert (("env", "token"), False) in paths
    assert (("id",), False) in paths
    assert (("env", ""), True) in paths
    assert all(p != ("relative",) for p, _ in paths)


def test_json_contexts_follow_quotes_through_branches() -> None:
    template = wt.parse('{"a": "{{.x}}", "n": {{.y}}{{if .z}}, "b": "{{.z}}"{{end}}}')
    contexts = wt.json_contexts(template)
    assert sorted(contexts.values()) == ["bare", "string", "string"]
    unbalanced = wt.parse('{"a": {{if .z}}"{{.z}}{{else}}"x"{{end}}}')
    with pytest.raises(wt.TemplateError, match="do not balance"):
        wt.json_contexts(unbalanced)
