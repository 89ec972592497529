"""The fraud rule engine (app/services/rules.py) and the shipped rule set
(app/data/fraud_rules.toml): each rule at its boundaries, how scores add up, suppression
and disabling, the version, validation, and a bad rule file refusing to start."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from app import cli as cli_module
from app.cli import cli
from app.main import create_app
from app.services.rules import (
    DEFAULT_RULES,
    MAX_SCORE,
    RULES,
    Reason,
    RulesError,
    RuleSet,
    Score,
    load_rules,
    parse_rules,
)
from tests.conftest import base_settings

SHIPPED = DEFAULT_RULES.read_text(encoding="utf-8")
DAY = 24 * 3600


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(None)


def features(**overrides: Any) -> dict[str, Any]:
    """A small transfer that no rule fires on, with `overrides`."""
    values: dict[str, Any] = {
        "kind": "transfer",
        "amount": 100,
        "band_count": 1,
        "transfers_in_window": 1,
        "first_payee": False,
        "prior_out_count": None,
        "prior_out_total": None,
        "account_age_seconds": None,
        "balance_before": None,
        "destination_flag": None,
        "suppressed": [],
    }
    values.update(overrides)
    return values


def reasons(rule_set: RuleSet, **overrides: Any) -> dict[str, Reason]:
    return {reason.code: reason for reason in rule_set.score(features(**overrides)).reasons}


def edit(table: str, old: str, new: str, text: str = SHIPPED) -> str:
    """`text` with `old` replaced by `new` inside the `[rules.<table>]` table only."""
    head, header, rest = text.partition(f"[rules.{table}]\n")
    assert header, f"no [rules.{table}] table"
    body, following, tail = rest.partition("\n[")
    assert body.count(old) == 1, f"{old!r} is not in [rules.{table}] exactly once"
    return head + header + body.replace(old, new) + following + tail


def without_table(table: str, text: str = SHIPPED) -> str:
    head, header, rest = text.partition(f"[rules.{table}]\n")
    assert header, f"no [rules.{table}] table"
    _body, following, tail = rest.partition("\n[")
    return head + (following.lstrip("\n") + tail if following else "")


# --- the shipped rule set -------------------------------------------------------------


def test_the_shipped_file_parses_with_every_rule_enabled(rules):
    assert set(RULES) == {
        "large_amount",
        "structuring",
        "velocity",
        "new_payee_large",
        "unusual_amount",
        "new_account_drain",
        "flagged_counterparty",
    }
    assert all(rules.params(code).enabled for code in RULES)
    assert rules.content == SHIPPED


def test_the_baseline_features_fire_nothing(rules):
    assert rules.score(features()) == Score(0, [])


# --- large_amount ---------------------------------------------------------------------


def test_large_amount_fires_at_ten_thousand(rules):
    score = rules.score(features(amount=1_000_000))
    assert score.codes == ["large_amount"]
    assert score.score == 40
    assert score.reasons[0].detail == "One transfer of 10,000.00 (at least 10,000.00)"


def test_large_amount_misses_one_cent_below(rules):
    assert "large_amount" not in reasons(rules, amount=999_999)


# --- structuring ----------------------------------------------------------------------


def test_structuring_fires_at_the_bottom_of_the_band_with_three_movements(rules):
    score = rules.score(features(amount=900_000, band_count=3))
    assert score.codes == ["structuring"]
    assert score.score == 60
    assert score.reasons[0].detail == "3 movements of 9,000.00–9,999.99 in 24 h"


def test_structuring_detail_states_the_count_and_the_band(rules):
    reason = reasons(rules, amount=950_000, band_count=4)["structuring"]
    assert reason.detail == "4 movements of 9,000.00–9,999.99 in 24 h"
    assert "–" in reason.detail  # an en dash, not a hyphen


def test_structuring_misses_one_cent_below_the_band(rules):
    assert "structuring" not in reasons(rules, amount=899_999, band_count=3)


def test_structuring_fires_at_the_top_of_the_band(rules):
    assert reasons(rules, amount=999_999, band_count=3)["structuring"].points == 60


def test_structuring_misses_one_cent_above_the_band_where_large_amount_takes_over(rules):
    score = rules.score(features(amount=1_000_000, band_count=3))
    assert score.codes == ["large_amount"]
    assert score.score == 40


def test_structuring_misses_with_two_movements(rules):
    assert "structuring" not in reasons(rules, amount=950_000, band_count=2)


def test_structuring_counts_any_kind_of_movement(rules):
    assert "structuring" in reasons(rules, kind="deposit", amount=950_000, band_count=3)


# --- velocity -------------------------------------------------------------------------


def test_velocity_fires_on_the_sixth_transfer(rules):
    score = rules.score(features(transfers_in_window=6))
    assert score.codes == ["velocity"]
    assert score.score == 30
    assert score.reasons[0].detail == "6 transfers from this account in 10 min (more than 5)"


def test_velocity_misses_on_the_fifth_transfer(rules):
    assert "velocity" not in reasons(rules, transfers_in_window=5)


def test_velocity_counts_transfers_only(rules):
    assert "velocity" not in reasons(rules, kind="withdrawal", transfers_in_window=6)


# --- new_payee_large ------------------------------------------------------------------


def test_new_payee_large_fires_at_two_thousand_to_a_first_payee(rules):
    score = rules.score(features(first_payee=True, amount=200_000))
    assert score.codes == ["new_payee_large"]
    assert score.score == 20
    assert score.reasons[0].detail == "First transfer to this payee, 2,000.00 (at least 2,000.00)"


def test_new_payee_large_misses_one_cent_below(rules):
    assert "new_payee_large" not in reasons(rules, first_payee=True, amount=199_999)


def test_new_payee_large_misses_a_known_payee(rules):
    assert "new_payee_large" not in reasons(rules, first_payee=False, amount=200_000)


def test_new_payee_large_misses_a_withdrawal(rules):
    assert "new_payee_large" not in reasons(rules, kind="withdrawal", amount=200_000)


# --- unusual_amount -------------------------------------------------------------------


def test_unusual_amount_fires_at_five_times_the_average(rules):
    score = rules.score(features(prior_out_count=3, prior_out_total=300, amount=500))
    assert score.codes == ["unusual_amount"]
    assert score.score == 25
    assert score.reasons[0].detail == (
        "5.00 is 5.0× the average outgoing amount of 1.00 over 30 days (3 movements)"
    )


def test_unusual_amount_fires_on_a_withdrawal_too(rules):
    found = reasons(rules, kind="withdrawal", prior_out_count=3, prior_out_total=300, amount=500)
    assert "unusual_amount" in found


def test_unusual_amount_misses_just_below_five_times(rules):
    assert "unusual_amount" not in reasons(
        rules, prior_out_count=3, prior_out_total=300, amount=499
    )


def test_unusual_amount_misses_with_two_prior_movements(rules):
    # 2 × 1.00 before: the amount is 5× the average, but the history is too short.
    assert "unusual_amount" not in reasons(
        rules, prior_out_count=2, prior_out_total=200, amount=500
    )


def test_unusual_amount_misses_without_history(rules):
    assert "unusual_amount" not in reasons(rules, prior_out_count=0, prior_out_total=0)
    assert "unusual_amount" not in reasons(rules, prior_out_count=3, prior_out_total=0)


def test_unusual_amount_never_fires_on_a_deposit(rules):
    assert "unusual_amount" not in reasons(
        rules, kind="deposit", prior_out_count=3, prior_out_total=300, amount=50_000
    )


# --- new_account_drain ----------------------------------------------------------------


def drain(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kind": "withdrawal",
        "amount": 100_000,
        "account_age_seconds": DAY - 1,
        "balance_before": 125_000,
    }
    values.update(overrides)
    return values


def test_new_account_drain_fires_at_eighty_percent_of_a_day_old_account(rules):
    score = rules.score(features(**drain()))
    assert score.codes == ["new_account_drain"]
    assert score.score == 30
    assert score.reasons[0].detail == (
        "1,000.00 out of an account opened 23 h ago: 80 % of its balance of 1,250.00"
    )


def test_new_account_drain_fires_on_a_transfer_too(rules):
    assert "new_account_drain" in reasons(rules, **drain(kind="transfer"))


def test_new_account_drain_misses_just_below_eighty_percent(rules):
    assert "new_account_drain" not in reasons(rules, **drain(balance_before=125_001))


def test_new_account_drain_misses_an_account_exactly_a_day_old(rules):
    assert "new_account_drain" not in reasons(rules, **drain(account_age_seconds=DAY))


def test_new_account_drain_misses_one_cent_below_the_minimum(rules):
    # 99,999 of 124,998 is still over 80 %: only the minimum amount keeps it out.
    assert "new_account_drain" not in reasons(rules, **drain(amount=99_999, balance_before=124_998))


def test_new_account_drain_never_fires_on_a_deposit(rules):
    assert "new_account_drain" not in reasons(rules, **drain(kind="deposit"))


# --- flagged_counterparty -------------------------------------------------------------


def test_flagged_counterparty_fires_on_an_open_flag(rules):
    score = rules.score(features(destination_flag="open"))
    assert score.codes == ["flagged_counterparty"]
    assert score.score == 40
    assert score.reasons[0].detail == "The destination account has an open fraud flag"


def test_flagged_counterparty_fires_on_a_flag_resolved_as_fraud(rules):
    reason = reasons(rules, destination_flag="fraud")["flagged_counterparty"]
    assert reason.points == 40
    assert reason.detail == "The destination account has a flag resolved as fraud"


def test_flagged_counterparty_misses_an_unflagged_destination(rules):
    assert "flagged_counterparty" not in reasons(rules, destination_flag=None)


def test_flagged_counterparty_misses_a_deposit(rules):
    assert "flagged_counterparty" not in reasons(rules, kind="deposit", destination_flag="open")


# --- scores ---------------------------------------------------------------------------


def test_points_add_up_below_the_cap(rules):
    score = rules.score(features(amount=1_000_000, first_payee=True))
    assert score.codes == ["large_amount", "new_payee_large"]
    assert score.score == 60


def test_the_score_is_capped_at_100_with_reasons_in_rule_order(rules):
    score = rules.score(
        features(amount=1_000_000, destination_flag="open", first_payee=True, transfers_in_window=6)
    )
    assert sum(reason.points for reason in score.reasons) == 130
    assert score.score == MAX_SCORE == 100
    assert score.codes == ["large_amount", "velocity", "new_payee_large", "flagged_counterparty"]
    order = list(RULES)
    assert score.codes == sorted(score.codes, key=order.index)


def test_outgoing_rules_add_up_past_the_cap_in_rule_order(rules):
    score = rules.score(
        features(
            kind="withdrawal",
            amount=950_000,
            band_count=3,
            prior_out_count=3,
            prior_out_total=300,
            account_age_seconds=3600,
            balance_before=950_000,
        )
    )
    assert score.codes == ["structuring", "unusual_amount", "new_account_drain"]
    assert score.score == 100  # 60 + 25 + 30 = 115, capped


def test_reasons_as_dicts(rules):
    score = rules.score(features(amount=1_000_000, first_payee=True))
    assert [reason.as_dict() for reason in score.reasons] == [
        {
            "code": "large_amount",
            "points": 40,
            "detail": "One transfer of 10,000.00 (at least 10,000.00)",
        },
        {
            "code": "new_payee_large",
            "points": 20,
            "detail": "First transfer to this payee, 10,000.00 (at least 2,000.00)",
        },
    ]


# --- suppression and disabling --------------------------------------------------------


def test_suppressed_rules_do_not_fire(rules):
    loud = features(amount=1_000_000, destination_flag="open", first_payee=True)
    assert rules.score(loud).codes == ["large_amount", "new_payee_large", "flagged_counterparty"]
    quiet = rules.score({**loud, "suppressed": ["large_amount", "flagged_counterparty"]})
    assert quiet.codes == ["new_payee_large"]
    assert quiet.score == 20


def test_suppressing_an_unknown_code_changes_nothing(rules):
    loud = features(amount=1_000_000)
    assert rules.score({**loud, "suppressed": ["no_such_rule"]}) == rules.score(loud)


def test_a_disabled_rule_does_not_fire():
    disabled = parse_rules(edit("large_amount", "points = 40", "points = 40\nenabled = false"))
    assert disabled.params("large_amount").enabled is False
    assert disabled.score(features(amount=1_000_000)) == Score(0, [])
    # The other rules still fire.
    assert disabled.score(features(amount=1_000_000, first_payee=True)).codes == ["new_payee_large"]


# --- version and determinism ----------------------------------------------------------


def test_the_version_is_the_sha256_of_the_files_bytes(rules):
    assert rules.version == hashlib.sha256(DEFAULT_RULES.read_bytes()).hexdigest()


def test_the_same_text_gives_the_same_version(rules, tmp_path):
    copy_path = tmp_path / "rules.toml"
    copy_path.write_bytes(DEFAULT_RULES.read_bytes())
    assert load_rules(copy_path).version == rules.version
    assert parse_rules(SHIPPED).version == parse_rules(SHIPPED).version == rules.version


def test_changing_one_parameter_changes_the_version(rules):
    changed = parse_rules(edit("velocity", "max_count = 5", "max_count = 6"))
    assert changed.version != rules.version
    assert changed.version == hashlib.sha256(changed.content.encode()).hexdigest()
    assert changed.params("velocity").max_count == 6


def test_the_version_is_the_sha256_of_a_crlf_files_bytes(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_bytes(SHIPPED.replace("\n", "\r\n").encode())
    assert load_rules(path).version == hashlib.sha256(path.read_bytes()).hexdigest()


def test_scoring_is_deterministic(rules):
    given = features(
        amount=1_000_000, first_payee=True, destination_flag="fraud", transfers_in_window=9
    )
    before = copy.deepcopy(given)
    first = rules.score(given)
    assert rules.score(given) == first
    assert load_rules(None).score(copy.deepcopy(given)) == first
    assert given == before  # the features are not changed by scoring


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            edit("velocity", "points = 30", "points = -1"),
            ["rules.velocity.points", "greater than or equal to 0"],
            id="negative-points",
        ),
        pytest.param(
            edit("velocity", "points = 30", "points = 101"),
            ["rules.velocity.points", "less than or equal to 100"],
            id="points-over-100",
        ),
        pytest.param(
            edit("velocity", "max_count = 5", "max_count = 5\nmax_cuont = 4"),
            ["rules.velocity.max_cuont", "Extra inputs are not permitted"],
            id="unknown-field",
        ),
        pytest.param(
            edit("velocity", "max_count = 5\n", ""),
            ["rules.velocity.max_count", "Field required"],
            id="missing-field",
        ),
        pytest.param(
            without_table("velocity"),
            ["rules.velocity", "Field required"],
            id="missing-table",
        ),
        pytest.param(
            SHIPPED + "\n[rules.lottery_win]\npoints = 10\n",
            ["rules.lottery_win", "Extra inputs are not permitted"],
            id="unknown-table",
        ),
        pytest.param(
            SHIPPED + "\n[rules.velocity\npoints = 10\n",
            ["not valid TOML"],
            id="bad-toml",
        ),
        pytest.param(
            edit("structuring", 'max_amount = "9999.99"', 'max_amount = "8999.99"'),
            ["rules.structuring.max_amount", "8999.99", "below", "min_amount 9000.00"],
            id="band-upside-down",
        ),
        pytest.param(
            edit("large_amount", 'min_amount = "10000.00"', 'min_amount = "10000.001"'),
            ["rules.large_amount.min_amount", "at most two decimals"],
            id="three-decimals",
        ),
        pytest.param(
            edit("unusual_amount", 'multiple = "5"', 'multiple = "0"'),
            ["rules.unusual_amount.multiple", "greater than 0"],
            id="zero-multiple",
        ),
    ],
)
def test_a_bad_rule_set_is_refused_naming_the_rule_and_the_field(text, expected):
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "candidate.toml")
    message = str(caught.value)
    assert message.startswith("candidate.toml: ")
    for fragment in expected:
        assert fragment in message


def test_a_band_of_one_amount_is_accepted():
    same = parse_rules(edit("structuring", 'min_amount = "9000.00"', 'min_amount = "9999.99"'))
    assert same.params("structuring").min_amount == same.params("structuring").max_amount
    assert "structuring" in reasons(same, amount=999_999, band_count=3)
    assert "structuring" not in reasons(same, amount=999_998, band_count=3)


def test_loading_a_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "rules.toml"
    with pytest.raises(RulesError) as caught:
        load_rules(missing)
    assert str(missing) in str(caught.value)
    assert "cannot be read" in str(caught.value)


def test_loading_a_bad_file_names_the_path_and_the_field(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(edit("velocity", "points = 30", "points = -1"), encoding="utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert str(path) in str(caught.value)
    assert "rules.velocity.points" in str(caught.value)


# --- start-up -------------------------------------------------------------------------


@pytest.fixture
def bad_rules(tmp_path: Path) -> Path:
    path = tmp_path / "bad_rules.toml"
    path.write_text(edit("velocity", "points = 30", "points = -1"), encoding="utf-8")
    return path


def test_create_app_refuses_a_bad_rule_file(tmp_path, bad_rules):
    settings = base_settings(tmp_path / "data", None, fraud_rules_path=bad_rules)
    with pytest.raises(RulesError, match=r"rules\.velocity\.points"):
        create_app(settings)


def test_create_app_refuses_a_bad_rule_file_named_in_the_environment(
    tmp_path, bad_rules, monkeypatch
):
    monkeypatch.setenv("BANK_FRAUD_RULES_PATH", str(bad_rules))
    settings = base_settings(tmp_path / "data", None)
    assert settings.fraud_rules_path == bad_rules
    with pytest.raises(RulesError, match=r"rules\.velocity\.points"):
        create_app(settings)


def test_bank_serve_refuses_a_bad_rule_file_before_serving(tmp_path, bad_rules, monkeypatch):
    started: list[str] = []

    def not_now(*_args: Any, **_kwargs: Any) -> None:
        started.append("started")
        raise AssertionError("the server started with a bad rule file")

    monkeypatch.setattr(uvicorn, "run", not_now)
    monkeypatch.setattr(cli_module, "migrate_database", not_now)
    env = {
        "BANK_ENV": "test",
        "BANK_DATA_DIR": str(tmp_path / "data"),
        "BANK_JWT_SECRET": "test-jwt-secret-" + "x" * 40,
        "BANK_PII_SECRET": "test-pii-secret-" + "y" * 40,
        "BANK_FRAUD_RULES_PATH": str(bad_rules),
    }
    result = CliRunner().invoke(cli, ["serve"], env=env)
    assert result.exit_code == 2, result.output
    assert "rules.velocity.points" in result.output
    assert str(bad_rules) in result.output
    assert started == []


async def test_the_app_loads_the_shipped_rules_by_default(app, rules):
    assert app.state.rules.version == rules.version


async def test_bank_fraud_rules_path_overrides_the_shipped_rules(
    tmp_path, database_url, monkeypatch, rules
):
    path = tmp_path / "rules.toml"
    path.write_text(
        edit("large_amount", 'min_amount = "10000.00"', 'min_amount = "5000.00"'),
        encoding="utf-8",
    )
    monkeypatch.setenv("BANK_FRAUD_RULES_PATH", str(path))
    application = create_app(base_settings(tmp_path / "data", database_url))
    try:
        loaded = application.state.rules
        assert loaded.version == hashlib.sha256(path.read_bytes()).hexdigest()
        assert loaded.version != rules.version
        assert loaded.params("large_amount").min_amount == 500_000
        assert "large_amount" in reasons(loaded, amount=500_000)
        assert "large_amount" not in reasons(rules, amount=500_000)
    finally:
        await application.state.database.dispose()
