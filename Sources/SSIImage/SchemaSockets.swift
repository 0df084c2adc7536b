import Foundation

// The snapshot format (Schema.swift), sockets: address, state, queued data, TCP repair state.

/// Version 3: what a socket was, beyond its kind: enough to rebuild it with the same address,
/// state, connections and queued data.
/// One multicast group a socket joined: the interface by name (its index is another on
/// another node), the group's address (4 or 16 bytes, network order) and its source filter
/// (MCAST_MSFILTER, RFC 3678): exclude mode with no source is a plain join.
public struct MulticastMembership: Codable, Sendable, Equatable {
    public var interface: String
    public var group: Data
    public var exclude: Bool
    public var sources: [Data]?
    public init(interface: String, group: Data, exclude: Bool, sources: [Data]?) {
        (self.interface, self.group, self.exclude, self.sources) = (interface, group, exclude, sources)
    }
}

public struct SocketImage: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Created, maybe bound, not connected (a datagram socket receiving by its name).
        case unconnected
        case listening
        case connected
    }
    /// AF_UNIX (1), AF_INET (2) or AF_INET6 (10).
    public var family: Int32
    /// SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_SEQPACKET (5).
    public var type: Int32
    public var state: State
    /// unix: the sun_path bytes (an abstract name starts with a 0 byte); inet: the struct
    /// sockaddr_in or sockaddr_in6 bytes. nil when unbound.
    /// The network namespace the socket was made in, when it is one the application made
    /// (NetNamespace.id); nil: the root's.
    public var netns: UInt64?
    public var address: Data?
    /// The address of the peer, for a connected socket.
    public var peerAddress: Data?
    /// listening: the backlog given to listen(2).
    public var backlog: Int32?
    /// unix listening: the inodes of the client sockets whose connections wait in the accept
    /// queue, oldest first.
    public var pendingClients: [UInt32]?
    /// unix datagram and seqpacket: the messages waiting to be read, oldest first, with their
    /// sender's name; unix stream with file descriptors in flight: its queued bytes, cut where
    /// the kernel attached fds (otherwise they are in FileDescriptorImage.socketData).
    public var datagrams: [QueuedDatagram]?
    /// shutdown(2) already done: 1 = no more receiving, 2 = no more sending (unix_diag's bits).
    public var shutdown: Int32?
    /// unix bound to a path: the socket file's permission bits, owner and group.
    public var fileMode: UInt32?
    public var fileUID: UInt32?
    public var fileGID: UInt32?
    /// Socket options worth keeping, by name: SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE,
    /// SO_PASSCRED, TCP_NODELAY, IPV6_V6ONLY.
    public var options: [String: Int32]?
    /// Version 4: other options (SO_PRIORITY, SO_LINGER, TCP_KEEPIDLE, TCP_CONGESTION, IP_TOS,
    /// buffer sizes...), by name, as the bytes getsockopt(2) gave; only those that differed
    /// from a fresh socket's.
    public var rawOptions: [String: Data]?
    /// Version 9: a classic BPF filter attached with SO_ATTACH_FILTER (socket(7)), as
    /// SO_GET_FILTER gives it back (8-byte struct sock_filter instructions), and whether
    /// SO_LOCK_FILTER was set after it.
    public var filter: Data?
    public var filterLocked: Bool?
    /// Multicast groups a UDP socket joined (IP_ADD_MEMBERSHIP, MCAST_JOIN_GROUP, ...);
    /// nil when none. Older readers restore the socket without them, as before.
    public var multicast: [MulticastMembership]?
    /// Version 4: a unix socket bound to a relative path: the directory it was bound from
    /// (the name stays relative, as the kernel keeps it).
    public var bindDirectory: String?
    /// A unix socket bound to a path whose file was renamed since (haproxy binds its stats
    /// socket under a temporary name, then renames it): where the file is now. The name
    /// (getsockname) stays the one bound.
    public var filePath: String?
    /// A unix socket whose file was removed after the bind (unlink(2)): bound again, its file
    /// is removed again.
    public var fileRemoved: Bool?
    /// Version 4: a socket bound to a path: the times of its file and of its directory,
    /// put back after it is bound again (binding creates the file, in the directory).
    public var fileTimes: [Int64]?
    public var directoryTimes: [Int64]?
    /// tcp connected: what TCP_REPAIR needs to rebuild the connection.
    public var tcp: TCPRepairState?

    /// Version 9, netlink: the protocol given to socket(2) (NETLINK_ROUTE 0, NETLINK_GENERIC
    /// 16...), and the multicast groups it is a member of, as NETLINK_LIST_MEMBERSHIPS gives
    /// them (bit N of word W is group 32 * W + N + 1). Its `address` is the struct
    /// sockaddr_nl of getsockname(2) (the port id), `peerAddress` that of connect(2).
    public var `protocol`: Int32?
    public var netlinkGroups: [UInt32]?
    /// Version 9, packet: the interface the socket was bound to (its `address` is the struct
    /// sockaddr_ll, whose index is replaced by that name's on restart) and its memberships.
    public var interfaceName: String?
    public var packetMemberships: [PacketMembership]?
    /// December 2026 (evening): the socket's owner when it is not root: its inode's uid and
    /// gid, which the kernel also keeps as the socket's sk_uid (SO_REUSEPORT groups only
    /// sockets of one owner, netfilter's owner match and `ss -e` read it). Restart gives them
    /// back with fchown(2) on the socket. nil: root's, or an older snapshot.
    public var ownerUID: UInt32?
    public var ownerGID: UInt32?
    /// December 2026 (evening), unix stream and seqpacket sockets, connected or listening:
    /// SO_PEERCRED as the application read it (unix(7)): the process that made the pair,
    /// connected to this end's listener, or (a listener) called listen(2).
    public var peerCredentials: PeerCredentials?
    public init(family: Int32, type: Int32, state: State) { self.family = family; self.type = type; self.state = state }
}

/// struct ucred of SO_PEERCRED: the PID as the application's namespace numbers it (nil when
/// that process was not one of the application's), the effective uid and gid.
public struct PeerCredentials: Codable, Sendable, Equatable, Hashable {
    public var pid: Int32?
    public var uid: UInt32
    public var gid: UInt32
    public init(pid: Int32?, uid: UInt32, gid: UInt32) { self.pid = pid; self.uid = uid; self.gid = gid }
}

public struct QueuedDatagram: Codable, Sendable, Equatable {
    public var data: Data
    /// The sender's bound name (sun_path bytes), nil when it had none.
    public var sender: Data?
    /// File descriptors in flight with this message (SCM_RIGHTS), in order: regular files,
    /// directories and sockets, described like fds (their `fd` is their index here).
    public var files: [FileDescriptorImage]?
    /// A UDP datagram's destination address as its packet's header had it (IP_PKTINFO: a
    /// socket bound to the wildcard address receives for every local address; DNS and NTP
    /// servers answer from the one asked), 4 or 16 bytes; its TTL or hop limit and its TOS or
    /// traffic class (IP_RECVTTL, IP_RECVTOS). nil in older snapshots, and for unix messages.
    public var destination: Data?
    public var ttl: Int32?
    public var tos: Int32?
    /// A unix message queued to a socket with SO_PASSCRED: its SCM_CREDENTIALS (the
    /// sender's PID in the application's namespace, nil when not one of its processes; its
    /// uid and gid). Restart sends it again as that process. nil in older snapshots.
    public var credentials: PeerCredentials?
    public init(data: Data, sender: Data?) { self.data = data; self.sender = sender }
}

/// A TCP connection's sequence numbers, queues and negotiated options, read in repair mode
/// (TCP_REPAIR, see tcp(7) and linux/tcp.h).
public struct TCPRepairState: Codable, Sendable, Equatable {
    /// The sequence number after the last byte queued to send (TCP_QUEUE_SEQ on the send
    /// queue), and after the last byte received (on the receive queue).
    public var sendSeq: UInt32
    public var recvSeq: UInt32
    /// Bytes written by the application and not yet acknowledged by the peer (version 11:
    /// in the blob file when long, SchemaBlobs.swift).
    @Blob public var sendQueue: Data
    /// Bytes received and not yet read by the application (the same).
    @Blob public var recvQueue: Data
    public var mss: UInt32
    public var sendWindowScale: UInt8
    public var recvWindowScale: UInt8
    public var sack: Bool
    public var timestamps: Bool
    /// TCP_TIMESTAMP: the connection's timestamp clock.
    public var timestamp: UInt32
    /// struct tcp_repair_window: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    public var window: [UInt32]
    /// Version 4: how many bytes at the end of sendQueue had not been sent yet (SIOCOUTQNSD):
    /// restart sends them normally, once out of repair mode, rather than as data in flight.
    public var unsent: UInt32?
    /// When `timestamp` was read (CLOCK_REALTIME, ns; nil in older snapshots): the restored
    /// clock goes on from it as if it had kept running.
    public var timestampRead: Int64?
    /// A half-closed connection (December 2026): it had sent its FIN (FIN_WAIT1, FIN_WAIT2,
    /// LAST_ACK, CLOSING) or received its peer's (CLOSE_WAIT, LAST_ACK, CLOSING). The
    /// sequence numbers above stop before each FIN; restart rebuilds the connection
    /// established and sends its FIN again with shutdown(SHUT_WR) once out of repair mode,
    /// and the peer's comes from the peer, inside the application, the same way.
    public var finSent: Bool?
    public var finReceived: Bool?
    /// A connection whose peer closed it and is gone (its program closed its end: the
    /// socket is an orphan the kernel is closing, or no longer exists), with the bytes it
    /// sent still unread here (CLOSE_WAIT): restart rebuilds it against a stand-in peer
    /// that sends the FIN again and is closed, as the peer was.
    public var peerGone: Bool?
    public init(sendSeq: UInt32, recvSeq: UInt32, sendQueue: Data, recvQueue: Data, mss: UInt32, sendWindowScale: UInt8,
                recvWindowScale: UInt8, sack: Bool, timestamps: Bool, timestamp: UInt32, window: [UInt32]) {
        self.sendSeq = sendSeq; self.recvSeq = recvSeq; self.sendQueue = sendQueue; self.recvQueue = recvQueue; self.mss = mss
        self.sendWindowScale = sendWindowScale; self.recvWindowScale = recvWindowScale; self.sack = sack
        self.timestamps = timestamps; self.timestamp = timestamp; self.window = window
    }
}

/// A PACKET_ADD_MEMBERSHIP of a packet socket: the interface by name, PACKET_MR_MULTICAST 0,
/// PACKET_MR_PROMISC 1, PACKET_MR_ALLMULTI 2 or PACKET_MR_UNICAST 3, and the address.
public struct PacketMembership: Codable, Sendable, Equatable {
    public var interfaceName: String
    public var type: UInt16
    public var address: Data
    public init(interfaceName: String, type: UInt16, address: Data) { self.interfaceName = interfaceName; self.type = type; self.address = address }
}
