"""`[notifications.<name>]` is decoded with its channel plugin's Struct and checked by
`hookline check`: unknown channels, bad values and missing secrets are one line each."""

from __future__ import annotations

from hookline.cli import main

BASE = (
    '[agent]\nname = "Shop"\n[providers]\ntelephony = "twilio"\nstt = "deepgram"\n'
    'llm = "openai"\ntts = "deepgram"\n'
)


def _check(tmp_path, capsys, extra: str) -> tuple[int, str, str]:
    path = tmp_path / "shop.toml"
    path.write_text(BASE + extra)
    code = main(["check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_channels_are_listed_and_their_secrets_checked(tmp_path, capsys, monkeypatch):
    for var in ("HOOKLINE_WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID"):
        monkeypatch.delenv(var, raising=False)
    code, out, _ = _check(
        tmp_path,
        capsys,
        '[notifications.sms]\nfrom_number = "+13125550199"\n'
        '[notifications.webhook]\nurl = "https://shop.example.com/hook"\n',
    )
    assert "notify     sms              from hookline-telephony-twilio" in out
    assert "notify     webhook          from hookline" in out
    assert code == 1
    assert "notifications.webhook.secret_env" in out and "HOOKLINE_WEBHOOK_SECRET" in out


def test_bad_channel_settings_are_one_line(tmp_path, capsys):
    code, _, err = _check(tmp_path, capsys, '[notifications.sms]\nfrom_number = "555-0199"\n')
    assert code == 1 and "notifications.sms.from_number" in err and err.count("\n") == 1
    code, _, err = _check(tmp_path, capsys, "[notifications.pager]\nx = 1\n")
    assert code == 1 and "no notification channel called 'pager'" in err
    code, _, err = _check(tmp_path, capsys, "[outbox]\nmax_attempts = 0\n")
    assert code == 1 and "outbox.max_attempts" in err


def test_a_bad_confirmation_template_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "shop.toml"
    path.write_text(
        BASE.replace('tts = "deepgram"\n', 'tts = "deepgram"\ntools = ["calendar_google"]\n')
        + '[tools.calendar_google]\nbackend = "local"\nsms_booked = "see you {whenn}"\n'
    )
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "tools.calendar_google" in err and "sms_booked" in err and "'whenn'" in err
