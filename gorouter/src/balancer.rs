//! Picking an endpoint from a pool (A.6, A.8): round-robin, least-connection, `max_conns`,
//! failed-endpoint skipping and sticky sessions.
