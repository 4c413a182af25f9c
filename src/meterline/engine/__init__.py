"""Pure billing logic: no I/O, no clock, no framework.

Owns: currencies and minor units (`money`), the rules of prices and plans (`catalog`), the rules
of meters and meter events (`metering`), local-time buckets (`buckets`), and exact aggregation
with the analytics oracle (`aggregate`). Later: pricing, periods, credit burn order, invoices.
Always true: functions take values and return values; money is `int` minor units and decimals
are `Decimal`, never float; a broken rule raises `RuleViolation` naming the parameter.
May import: the standard library only.
"""
