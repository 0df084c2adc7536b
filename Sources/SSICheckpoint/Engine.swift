// The checkpoint/restart engine.
