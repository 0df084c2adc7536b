import SSITransport

/// The hooks through which the subsystem that owns a set acts on its objects.
public protocol KDDMSetHooks: Sendable {
    /// The owner touches an object that does not exist yet: its first value, or nil to leave it
    /// missing.
    func firstTouch(id: UInt64) -> [UInt8]?
    /// Turns a value into the bytes that are stored and shipped (export) and back (import).
    func export(_ value: [UInt8]) -> [UInt8]
    func `import`(_ bytes: [UInt8]) -> [UInt8]
    /// A node's cached copy was invalidated.
    func invalidated(id: UInt64, on node: NodeID)
}

public struct DefaultHooks: KDDMSetHooks {
    public init() {}
    public func firstTouch(id: UInt64) -> [UInt8]? { nil }
    public func export(_ value: [UInt8]) -> [UInt8] { value }
    public func `import`(_ bytes: [UInt8]) -> [UInt8] { bytes }
    public func invalidated(id: UInt64, on node: NodeID) {}
}
