"""kai's wire protocol: the messages agents and the hub exchange, their close codes and the
bounds on what either side may send. It imports nothing else of kai, so the hub and the SDKs
share it."""
