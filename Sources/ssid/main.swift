// ssid: the node daemon. Configuration: docs/cluster.md, and DaemonConfig's doc comment.
//   ssid --config /etc/ssi/ssid.conf [--node 3] [--listen 10.0.0.3:7100] ...
import Foundation
import Logging
import SSIDaemon
import SSISystem

// A control client or dashboard peer that goes away mid-reply must cost an EPIPE on that one
// write, not the daemon (write(2): SIGPIPE is sent when the reading end is closed).
signal(SIGPIPE, SIG_IGN)
// Buffers of megabytes are allocated for every checkpoint and migration: kept warm (Heap).
Heap.keepFreedMemory()
let config: DaemonConfig
do {
    config = try DaemonConfig.parse(arguments: Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("ssid: \(error)\n".utf8))
    exit(2)
}
LoggingSystem.bootstrap { label in
    var h = StreamLogHandler.standardError(label: label)
    h.logLevel = Logger.Level(rawValue: config.logLevel) ?? .info
    return h
}
var logger = Logger(label: "ssid.\(config.node)")
logger.logLevel = Logger.Level(rawValue: config.logLevel) ?? .info
do {
    let daemon = try NodeDaemon(config: config, logger: logger)
    try await daemon.run()
} catch {
    logger.error("ssid: \(error)")
    exit(1)
}
