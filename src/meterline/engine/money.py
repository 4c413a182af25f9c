"""Currencies (ISO 4217, lowercase, as Stripe writes them) and their minor units."""

from __future__ import annotations

from meterline.engine.errors import RuleViolation

ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

CURRENCIES = frozenset(
    """aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn
    bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf
    gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr
    lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen
    pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd
    top try ttd twd tzs uah ugx usd uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw""".split()
)

# Stripe caps a unit amount at eight digits in the minor unit.
MAX_UNIT_AMOUNT = 99_999_999


def minor_unit_exponent(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def check_currency(value: str, param: str = "currency") -> str:
    c = value.lower()
    if c not in CURRENCIES:
        raise RuleViolation(
            param,
            f"Invalid currency: {value}. Use a three-letter ISO 4217 code in lowercase, such as usd or eur.",
            "parameter_invalid_currency",
        )
    return c
