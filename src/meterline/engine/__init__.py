"""Pure billing logic: no I/O, no clock, no framework.

Owns: currencies and minor units (`money`), the rules of prices and plans (`catalog`), the rules
of meters and meter events (`metering`), local-time buckets (`buckets`), exact aggregation
with the analytics oracle (`aggregate`), the rollup planner (`rollups`), what a price charges
(`pricing`), subscription periods (`periods`), subscription cycles and invoice lines
(`invoices`), and credits: burn order, application, the ledger's rules and invoice totals
(`credits`).
Always true: functions take values and return values; money is `int` minor units and decimals
are `Decimal`, never float; a broken rule raises `RuleViolation` naming the parameter.
May import: the standard library only.
"""
