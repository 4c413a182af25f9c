"""Stripe's wire protocol, and nothing else.

Owns: bracket-form decoding (`form`), typed parameter reading with Stripe's error codes (`params`),
the error envelope (`errors`), list envelopes and cursor parameters (`lists`), and `expand[]`
(`expand`).
Always true: no business rule lives here, and every failure leaves as a `StripeError`, which
renders as Stripe's `{"error": {type, code, message, param}}` envelope.
May import: the standard library and third-party libraries only; nothing else of ours.
"""
