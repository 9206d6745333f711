//! Wiring: start listeners, NATS and the prune loop; health; signals and drain (A.13).
