"""OpenTelemetry metrics of the daemon: instruments, exporters, the RPC handler wrapper.

The core never imports this package. The runtime calls the `Recorder` from the one
mutation path (and for each Check), a wrapper on every handler times each call, the
journal reports each fsync; the OpenTelemetry SDK reads the series at collection time
and exports them off the event loop (`exporters`). With no exporter configured (the
default) none of this is built, the SDK is not even imported (`pipeline`), and the hot
path pays nothing.
"""
