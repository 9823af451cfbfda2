//! Frontend: how a host sees a volume (placeholder; see the frontend work).
