"""Document approval: a signal, a query, an update that returns the new state, a reminder
and a timeout (ZoopFlow's documentApproval, on garrison)."""
