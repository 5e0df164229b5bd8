"""Adapter placeholder: registered so `trajkit env list` names it; not usable yet."""


def availability() -> str | None:
    return "adapter not built yet"
