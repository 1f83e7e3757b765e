//! The load balancer as a pure state machine (DESIGN.md section 7): inputs
//! are ticks, load samples and received messages; outputs are messages to
//! send. No sockets, no clocks of its own.
