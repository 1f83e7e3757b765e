//! Harness for multi-node integration tests: starts isolated local clusters
//! with `mosix-local` and runs commands on their nodes.
