"""The Unleash import beyond the specification: refusals, notes, contexts, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from unveil import Client
from unveil.cli.main import main
from unveil.migrate import ImportRefused, import_unleash, unleash_context


def _features(*features: dict[str, Any], segments: list[Any] | None = None) -> dict[str, Any]:
    return {"version": 2, "features": list(features), "segments": segments or []}


def _feature(name: str, strategies: list[Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "enabled": True, "strategies": strategies, **extra}


def _refusal(source: dict[str, Any]) -> list[str]:
    with pytest.raises(ImportRefused) as caught:
        import_unleash(source)
    return [str(p) for p in caught.value.problems]


def test_every_problem_is_named_and_nothing_is_imported() -> None:
    problems = _refusal(
        _features(
            _feature("custom", [{"name": "myOwnStrategy", "parameters": {}}]),
            _feature(
                "random", [{"name": "gradualRolloutRandom", "parameters": {"percentage": "30"}}]
            ),
            _feature(
                "clash",
                [{"name": "default"}],
                variants=[{"name": "disabled", "weight": 1}],
            ),
            _feature("fine", [{"name": "default"}]),
        )
    )
    assert problems == [
        "features[\"custom\"].strategies[0]: custom strategy 'myOwnStrategy' has no equivalent; "
        "unveil cannot run its code",
        'features["random"].strategies[0]: a random 30% rollout gives no stable assignment',
        "features[\"clash\"]: a variant named 'disabled' would clash with the name unveil gives "
        "to a feature that is off or on without a variant",
    ]


def test_variant_lists_in_conflicting_orders_are_refused() -> None:
    variants_ab = [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]
    problems = _refusal(
        _features(
            _feature(
                "f",
                [{"name": "default", "variants": list(reversed(variants_ab))}],
                variants=variants_ab,
            )
        )
    )
    assert problems == [
        'features["f"]: its strategies list the same variants in different orders; '
        "unveil keeps one order per flag"
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ([], ": an Unleash features document must be a mapping"),
        ({"features": {}}, "features: must be a list of features"),
        ({"features": [], "segments": 3}, "segments: must be a list of segments"),
        ({"features": [{"enabled": True}]}, "features[0]: a feature needs a name"),
        ({"events": [{"type": "nope"}]}, "events[0]: not a well-formed 'nope' event"),
        (
            {"events": [{"type": "feature-updated"}]},
            "events[0]: not a well-formed 'feature-updated' event",
        ),
        (
            {"features": [{"name": "f", "strategies": [{"name": "default", "constraints": 3}]}]},
            'features["f"].strategies[0].constraints: must be a list of mappings',
        ),
    ],
)
def test_malformed_sources_are_refused(source: Any, expected: str) -> None:
    with pytest.raises(ImportRefused) as caught:
        import_unleash(source)
    assert [f"{p.path}: {p.message}" for p in caught.value.problems] == [expected]


def test_behaviour_kept_with_a_remark_is_a_note() -> None:
    imported = import_unleash(
        _features(
            _feature(
                "odd",
                [
                    {
                        "name": "default",
                        "constraints": [
                            {"contextName": "x", "operator": "SOUNDS_LIKE", "values": ["a"]}
                        ],
                    }
                ],
            ),
            _feature("orphan", [{"name": "default"}], dependencies=[{"feature": "gone"}]),
            _feature(
                "half",
                [
                    {
                        "name": "flexibleRollout",
                        "parameters": {"rollout": "50", "stickiness": "default"},
                    }
                ],
            ),
        )
    )
    notes = [str(n) for n in imported.notes]
    assert notes == [
        "features[\"odd\"].strategies[0].constraints[0]: unknown operator 'SOUNDS_LIKE': "
        "the constraint never holds, as in Unleash",
        "features[\"orphan\"].dependencies[0]: feature 'gone' does not exist: "
        "Unleash keeps this one off",
        'features["half"].strategies[0]: contexts without userId or sessionId are outside '
        "the 50%; Unleash would draw them at random",
    ]
    client = Client.from_file(imported.document)
    assert client.enabled("odd", {"x": "a"}) is False
    assert client.enabled("orphan", {}) is False


def test_default_stickiness_falls_back_from_user_to_session() -> None:
    imported = import_unleash(
        _features(
            _feature(
                "f",
                [{"name": "flexibleRollout", "parameters": {"rollout": "50", "groupId": "g"}}],
            )
        )
    )
    client = Client.from_file(imported.document)
    import mmh3

    for i in range(200):
        in_by_user = mmh3.hash(f"g:{i}", 0, False) % 100 + 1 <= 50
        assert client.enabled("f", unleash_context({"userId": str(i)})) is in_by_user
        # no userId: the sessionId decides, with the same arithmetic
        assert client.enabled("f", unleash_context({"sessionId": str(i)})) is in_by_user


def test_unleash_context_flattens_properties_and_takes_the_key_from_user_id() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    context = unleash_context(
        {
            "userId": "u1",
            "environment": "prod",
            "properties": {"plan": "pro", "environment": "shadowed"},
        },
        now=now,
    )
    assert context == {
        "userId": "u1",
        "key": "u1",
        "environment": "prod",
        "plan": "pro",
        "currentTime": "2026-11-22T12:00:00+00:00",
    }
    assert "key" not in unleash_context({"sessionId": "s"})


def test_delta_events_are_replayed_in_order() -> None:
    imported = import_unleash(
        {
            "events": [
                {"type": "hydration", "features": [_feature("a", [])], "segments": []},
                {"type": "feature-updated", "feature": _feature("b", [])},
                {"type": "feature-removed", "featureName": "a"},
            ]
        }
    )
    assert list(imported.document["flags"]) == ["b"]


UNLEASH_SHAPED = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2000)
    | st.sampled_from(
        [
            "default",
            "flexibleRollout",
            "userWithId",
            "remoteAddress",
            "IN",
            "NUM_LT",
            "REGEX",
            "userId",
            "50",
            "100",
            "f",
            "g",
            "disabled",
            "x",
            "1.2.3",
            "10.0.0.0/8",
            "(",
            "",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "enabled",
                    "strategies",
                    "variants",
                    "parameters",
                    "constraints",
                    "segments",
                    "dependencies",
                    "weight",
                    "stickiness",
                    "overrides",
                    "contextName",
                    "operator",
                    "values",
                    "value",
                    "inverted",
                    "caseInsensitive",
                    "rollout",
                    "id",
                    "feature",
                    "groupId",
                    "payload",
                    "features",
                    "events",
                    "type",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


FEATURE_SHAPED = st.fixed_dictionaries(
    {"name": st.sampled_from(["f", "g", "h"]), "enabled": st.booleans()},
    optional={
        "strategies": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["default", "flexibleRollout", "userWithId", "x"])},
                optional={
                    "parameters": UNLEASH_SHAPED,
                    "constraints": st.lists(UNLEASH_SHAPED, max_size=2),
                    "variants": UNLEASH_SHAPED,
                    "segments": UNLEASH_SHAPED,
                },
            ),
            max_size=3,
        ),
        "variants": UNLEASH_SHAPED,
        "dependencies": UNLEASH_SHAPED,
    },
)
SOURCES = UNLEASH_SHAPED | st.fixed_dictionaries(
    {"features": st.lists(FEATURE_SHAPED, max_size=3)},
    optional={"segments": UNLEASH_SHAPED},
)


@settings(max_examples=1500, deadline=None)
@given(source=SOURCES)
def test_any_input_is_imported_or_refused_never_crashes(source: Any) -> None:
    try:
        imported = import_unleash(source)
    except ImportRefused as exc:
        refused: ImportRefused | None = exc
    else:
        refused = None
        Client.from_file(imported.document)  # what the import writes always loads
    assert refused is None or refused.problems


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_cli_writes_a_flags_file_that_evaluates_like_unleash(tmp_path: Path) -> None:
    source = tmp_path / "features.json"
    source.write_text(
        json.dumps(
            _features(
                _feature(
                    "checkout",
                    [
                        {
                            "name": "flexibleRollout",
                            "parameters": {"rollout": "100", "stickiness": "default"},
                        }
                    ],
                    variants=[
                        {
                            "name": "blue",
                            "weight": 500,
                            "payload": {"type": "string", "value": "b"},
                        },
                        {"name": "green", "weight": 500},
                    ],
                )
            )
        )
    )
    out = tmp_path / "flags.yaml"
    result = _run("import", "unleash", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "imported 1 flags" in result.output
    client = Client.from_file(out)
    seen = {client.evaluate("checkout", {"userId": f"u{i}"}).variant for i in range(100)}
    assert seen == {"blue", "green"}
    assert "bucketing: unleash" in out.read_text()


def test_cli_refuses_with_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "features.json"
    source.write_text(json.dumps(_features(_feature("c", [{"name": "custom"}]))))
    out = tmp_path / "flags.yaml"
    result = _run("import", "unleash", str(source), "-o", str(out))
    assert result.exit_code == 1
    assert "custom strategy 'custom' has no equivalent" in result.output
    assert not out.exists()


def test_cli_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    source = tmp_path / "features.json"
    source.write_text("{not json")
    result = _run("import", "unleash", str(source))
    assert result.exit_code == 1
    assert "features.json:1:2" in result.output
