"""Pure billing logic: no I/O, no clock, no framework.

Owns: currencies and minor units (`money`), the rules of prices and plans (`catalog`).
Later: time buckets, aggregation, pricing, periods, credit burn order, invoice assembly.
Always true: functions take values and return values; money is `int` minor units and decimals
are `Decimal`, never float; a broken rule raises `RuleViolation` naming the parameter.
May import: the standard library only.
"""
