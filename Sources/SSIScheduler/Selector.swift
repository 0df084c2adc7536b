/// A selector: a condition over probe and filter values, such as
/// `cpu.load > 0.5 && clock.hour >= 20`.
///
/// Grammar (lowest precedence first):
///
///     or      := and ("||" and)*
///     and     := not ("&&" not)*
///     not     := "!" not | compare
///     compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
///     sum     := product (("+" | "-") product)*
///     product := unary (("*" | "/") unary)*
///     unary   := "-" unary | NUMBER | NAME | "true" | "false" | "(" or ")"
///
/// A NAME is a dotted name (`cpu.load`, `load`). Values are numbers; a comparison gives 1
/// or 0 and a condition holds when its value is not 0, so `high` alone (a hysteresis
/// filter's 0/1) is a condition too.
public indirect enum Expression: Sendable, Equatable {
    case number(Double)
    case name(String)
    case unary(String, Expression)
    case binary(String, Expression, Expression)

    /// Every name the expression reads.
    public var names: Set<String> {
        switch self {
        case .number: return []
        case .name(let n): return [n]
        case .unary(_, let e): return e.names
        case .binary(_, let a, let b): return a.names.union(b.names)
        }
    }

    /// The value, with `values` for names; nil when a name has no value yet.
    public func evaluate(_ values: [String: Double]) -> Double? {
        switch self {
        case .number(let x): return x
        case .name(let n): return values[n]
        case .unary(let op, let e):
            guard let v = e.evaluate(values) else { return nil }
            return op == "!" ? (v == 0 ? 1 : 0) : -v
        case .binary(let op, let a, let b):
            // && and || decide on the left value when they can, so that a condition over a
            // value not measured yet still holds or fails where the other side decides it.
            if op == "&&" || op == "||" { return logical(op, a.evaluate(values), { b.evaluate(values) }) }
            guard let x = a.evaluate(values), let y = b.evaluate(values) else { return nil }
            return Self.apply(op, x, y)
        }
    }

    /// Whether the condition holds; a condition that reads a missing value does not hold.
    public func holds(_ values: [String: Double]) -> Bool { (evaluate(values) ?? 0) != 0 }

    private func logical(_ op: String, _ x: Double?, _ y: () -> Double?) -> Double? {
        if op == "&&", x == 0 { return 0 }
        if op == "||", let x, x != 0 { return 1 }
        guard let y = y() else { return nil }
        if op == "&&" { return x == nil ? (y == 0 ? 0 : nil) : (y != 0 ? 1 : 0) }
        return x == nil ? (y != 0 ? 1 : nil) : (y != 0 ? 1 : 0)
    }

    private static func apply(_ op: String, _ x: Double, _ y: Double) -> Double {
        switch op {
        case "+": return x + y
        case "-": return x - y
        case "*": return x * y
        case "/": return y == 0 ? .infinity : x / y
        case "<": return x < y ? 1 : 0
        case "<=": return x <= y ? 1 : 0
        case ">": return x > y ? 1 : 0
        case ">=": return x >= y ? 1 : 0
        case "==": return x == y ? 1 : 0
        default: return x != y ? 1 : 0
        }
    }

    /// Parses `text`; the error names the column where parsing stopped.
    public static func parse(_ text: String) throws(SelectorError) -> Expression {
        var p = SelectorParser(text)
        let e = try p.or()
        guard p.atEnd else { throw p.error("unexpected '\(p.rest)'") }
        return e
    }
}

public struct SelectorError: Error, Sendable, CustomStringConvertible {
    public var text: String
    public var column: Int
    public var reason: String
    public var description: String { "selector \"\(text)\" does not parse at column \(column): \(reason)" }
}

/// A recursive-descent parser over the selector's characters.
struct SelectorParser {
    let chars: [Character]
    let text: String
    var i = 0

    init(_ text: String) {
        self.text = text
        chars = Array(text)
    }

    var atEnd: Bool {
        mutating get { skipSpace(); return i >= chars.count }
    }
    var rest: String { String(chars[i...].prefix(12)) }

    func error(_ reason: String) -> SelectorError { SelectorError(text: text, column: i + 1, reason: reason) }

    mutating func skipSpace() { while i < chars.count && chars[i].isWhitespace { i += 1 } }

    /// Consumes `token` if it comes next.
    mutating func take(_ token: String) -> Bool {
        skipSpace()
        let t = Array(token)
        guard i + t.count <= chars.count, Array(chars[i..<i + t.count]) == t else { return false }
        // "<" must not take the first character of "<=", nor "!" of "!=".
        if t.count == 1, "<>!=".contains(t[0]), i + 1 < chars.count, chars[i + 1] == "=" { return false }
        i += t.count
        return true
    }

    mutating func or() throws(SelectorError) -> Expression {
        var e = try and()
        while take("||") { e = .binary("||", e, try and()) }
        return e
    }

    mutating func and() throws(SelectorError) -> Expression {
        var e = try not()
        while take("&&") { e = .binary("&&", e, try not()) }
        return e
    }

    mutating func not() throws(SelectorError) -> Expression {
        if take("!") { return .unary("!", try not()) }
        return try compare()
    }

    mutating func compare() throws(SelectorError) -> Expression {
        let a = try sum()
        for op in ["<=", ">=", "==", "!=", "<", ">"] where take(op) { return .binary(op, a, try sum()) }
        return a
    }

    mutating func sum() throws(SelectorError) -> Expression {
        var e = try product()
        while true {
            if take("+") { e = .binary("+", e, try product()) } else if take("-") { e = .binary("-", e, try product()) } else { return e }
        }
    }

    mutating func product() throws(SelectorError) -> Expression {
        var e = try unary()
        while true {
            if take("*") { e = .binary("*", e, try unary()) } else if take("/") { e = .binary("/", e, try unary()) } else { return e }
        }
    }

    mutating func unary() throws(SelectorError) -> Expression {
        if take("-") { return .unary("-", try unary()) }
        if take("(") {
            let e = try or()
            guard take(")") else { throw error("missing ')'") }
            return e
        }
        skipSpace()
        guard i < chars.count else { throw error("expected a value at the end") }
        let start = i
        if chars[i].isNumber || chars[i] == "." {
            while i < chars.count && (chars[i].isNumber || chars[i] == ".") { i += 1 }
            guard let x = Double(String(chars[start..<i])) else { throw error("bad number") }
            return .number(x)
        }
        while i < chars.count && (chars[i].isLetter || chars[i].isNumber || "._-".contains(chars[i])) {
            // A '-' belongs to a name only between two name characters (`mem-free`), never
            // as an operator's place (`a -b`, `a-1` reads as a name, so write `a - 1`).
            if chars[i] == "-" && (i + 1 >= chars.count || !(chars[i + 1].isLetter)) { break }
            i += 1
        }
        guard i > start, chars[start].isLetter else { throw error("expected a number, a name or '('") }
        let n = String(chars[start..<i])
        if n == "true" { return .number(1) }
        if n == "false" { return .number(0) }
        return .name(n)
    }
}
