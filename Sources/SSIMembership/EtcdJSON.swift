/// The JSON of a request to etcd's gateway, written directly. JSONSerialization (Foundation
/// on Linux) bridges every value of a `[String: Any]` through its Objective-C-like object
/// model: a KDDM write's transaction (two compares of the object, one per membership key of
/// the fence, two puts) took 0.7 ms to encode on this 2-core VM, half of what etcd takes to
/// apply it, and it is on the way of every KDDM write (a migration's take-over of its record
/// among them). The bodies hold only strings (keys and values in base64, numbers as decimal
/// strings, as the gateway's proto3 JSON mapping wants 64-bit integers), booleans, integers,
/// and arrays and objects of those; anything else gives nil and the caller falls back to
/// JSONSerialization.
enum EtcdJSON {
    static func encode(_ body: [String: Any]) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        return write(body, into: &out) ? out : nil
    }

    private static func write(_ value: Any, into out: inout [UInt8]) -> Bool {
        switch value {
        case let s as String:
            writeString(s, into: &out)
        case let b as Bool:
            out.append(contentsOf: b ? Array("true".utf8) : Array("false".utf8))
        case let i as Int:
            out.append(contentsOf: String(i).utf8)
        case let i as Int64:
            out.append(contentsOf: String(i).utf8)
        case let d as [String: Any]:
            out.append(UInt8(ascii: "{"))
            // Sorted keys: the same request gives the same bytes (easier to compare in a
            // capture); etcd does not care about the order.
            for (n, key) in d.keys.sorted().enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                guard write(d[key]!, into: &out) else { return false }
            }
            out.append(UInt8(ascii: "}"))
        case let a as [Any]:
            out.append(UInt8(ascii: "["))
            for (n, v) in a.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                guard write(v, into: &out) else { return false }
            }
            out.append(UInt8(ascii: "]"))
        default:
            return false
        }
        return true
    }

    /// A JSON string (RFC 8259, section 7): the quote, the backslash and the control
    /// characters escaped, everything else as its UTF-8 bytes.
    private static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(c >> 4)], hex[Int(c & 15)]])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
