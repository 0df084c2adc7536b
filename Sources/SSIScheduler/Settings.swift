import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import SSISystem

/// A scheduler settings file (docs/scheduler.md): the probes every configuration shares,
/// the named configurations, and how probe periods stretch under load.
///
/// ```xml
/// <scheduler>
///   <periods stretch-above="0.8" factor="4"/>
///   <probe name="cpu" type="cpu" period-ms="1000"/>          <!-- shared: selectors read these -->
///   <configuration name="day" selector="clock.hour &gt;= 8 &amp;&amp; clock.hour &lt; 20">
///     <filter name="load" type="moving-average" input="cpu.load" window="5"/>
///     <policy name="lb" type="balance" input="load" threshold="0.5"/>
///   </configuration>
///   <configuration name="night" selector="otherwise"> ... </configuration>
/// </scheduler>
/// ```
public struct SchedulerSettings: Sendable, Equatable {
    /// Where the file came from, for messages.
    public var source: String
    /// Probe periods are multiplied by `stretchFactor` while the node's CPU usage (0...1) is
    /// above `stretchAbove`, and go back when it falls below it again.
    public var stretchAbove: Double = 0.8
    public var stretchFactor: Double = 4
    /// Probes loaded whatever the configuration: selectors may read only these and the
    /// filters declared beside them.
    public var shared: [Element] = []
    public var configurations: [Configuration] = []

    public struct Configuration: Sendable, Equatable {
        public var name: String
        /// The selector's source text; "otherwise" marks the configuration used when no
        /// other selector holds.
        public var selector: String
        public var line: Int
        public var elements: [Element]
        public var isOtherwise: Bool { selector.trimmingCharacters(in: .whitespaces) == "otherwise" }
    }

    /// A probe, filter or policy: its kind, name, type, parameters, and where it was written.
    public struct Element: Sendable, Equatable, Hashable {
        public enum Kind: String, Sendable { case probe, filter, policy }
        public var kind: Kind
        public var name: String
        public var type: String
        public var parameters: [String: String]
        public var line: Int

        /// Two elements are the same plug-in when kind, name and type agree; then only their
        /// parameters may differ (a re-parameterisation, not a reload).
        public var identity: String { "\(kind.rawValue):\(name):\(type)" }

        public func double(_ key: String, _ fallback: Double) -> Double { parameters[key].flatMap(Double.init) ?? fallback }
        public func int(_ key: String, _ fallback: Int) -> Int { parameters[key].flatMap(Int.init) ?? fallback }
        public static func == (a: Element, b: Element) -> Bool {
            a.kind == b.kind && a.name == b.name && a.type == b.type && a.parameters == b.parameters
        }
        public func hash(into h: inout Hasher) { h.combine(identity) }
    }

    /// The configuration named `name`.
    public func configuration(_ name: String) -> Configuration? { configurations.first { $0.name == name } }
}

/// A settings file that cannot be used: the file, line and element, and why.
public struct SettingsError: Error, Sendable, CustomStringConvertible {
    public var source: String
    public var line: Int
    public var element: String
    public var reason: String
    public var description: String { "\(source):\(line): <\(element)>: \(reason)" }

    /// The same, in the project's error vocabulary.
    public var ssiError: SSIError {
        SSIError(.invalidArgument, "scheduler settings \(description)",
                 hint: "fix the file (docs/scheduler.md describes every element); nothing was changed")
    }
}

extension SchedulerSettings {
    /// Parses and validates settings. Throws the first problem found, naming its line.
    public static func parse(_ data: Data, source: String) throws(SettingsError) -> SchedulerSettings {
        let reader = SettingsReader(source: source)
        let parser = XMLParser(data: data)
        parser.delegate = reader
        let ok = parser.parse()
        if let e = reader.error { throw e }
        if !ok || parser.parserError != nil {
            let why = parser.parserError.map { ($0 as NSError).code } ?? -1
            throw SettingsError(source: source, line: parser.lineNumber, element: reader.current ?? "?",
                                reason: "malformed XML (parser error \(why))")
        }
        guard reader.sawRoot else {
            throw SettingsError(source: source, line: 1, element: "scheduler", reason: "no <scheduler> root element")
        }
        try SettingsValidator(settings: reader.settings).validate()
        return reader.settings
    }

    /// Reads and parses a file.
    public static func load(path: String) throws -> SchedulerSettings {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SSIError(.notFound, "cannot read scheduler settings \(path)", hint: "give the path of an XML settings file (docs/scheduler.md)")
        }
        do { return try parse(data, source: path) } catch { throw error.ssiError }
    }
}

/// The SAX side of the parser: elements in, a settings value out, the first error kept.
final class SettingsReader: NSObject, XMLParserDelegate {
    let source: String
    var settings: SchedulerSettings
    var error: SettingsError?
    var current: String?
    var sawRoot = false
    private var depth = 0
    private var inConfiguration = false

    init(source: String) {
        self.source = source
        settings = SchedulerSettings(source: source)
    }

    func fail(_ parser: XMLParser, _ element: String, _ reason: String) {
        if error == nil { error = SettingsError(source: source, line: parser.lineNumber, element: element, reason: reason) }
        parser.abortParsing()
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?,
                qualifiedName: String?, attributes: [String: String] = [:]) {
        current = name
        depth += 1
        let line = parser.lineNumber
        switch (name, depth) {
        case ("scheduler", 1):
            sawRoot = true
        case (_, 1):
            fail(parser, name, "the root element must be <scheduler>")
        case ("periods", 2):
            guard let above = Double(attributes["stretch-above"] ?? "0.8"), (0...1).contains(above),
                  let factor = Double(attributes["factor"] ?? "4"), factor >= 1 else {
                return fail(parser, name, "stretch-above must be 0..1 and factor >= 1")
            }
            settings.stretchAbove = above
            settings.stretchFactor = factor
        case ("configuration", 2):
            guard let n = attributes["name"], !n.isEmpty else { return fail(parser, name, "a configuration needs a name") }
            guard let sel = attributes["selector"], !sel.isEmpty else {
                return fail(parser, name, "configuration '\(n)' needs a selector (a condition, or \"otherwise\")")
            }
            inConfiguration = true
            settings.configurations.append(.init(name: n, selector: sel, line: line, elements: []))
        case ("probe", 2), ("filter", 2), ("probe", 3), ("filter", 3), ("policy", 3):
            if depth == 3 && !inConfiguration { return fail(parser, name, "<\(name)> must be inside <configuration> or <scheduler>") }
            element(parser, name, attributes, line)
        case ("policy", 2):
            fail(parser, name, "a policy belongs to a <configuration>")
        default:
            fail(parser, name, "unknown element (expected periods, probe, filter, policy, configuration)")
        }
    }

    private func element(_ parser: XMLParser, _ name: String, _ attributes: [String: String], _ line: Int) {
        guard let kind = SchedulerSettings.Element.Kind(rawValue: name) else { return }
        guard let n = attributes["name"], !n.isEmpty, n.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            return fail(parser, name, "needs a name of letters, digits, '-' or '_'")
        }
        guard let type = attributes["type"], !type.isEmpty else { return fail(parser, name, "'\(n)' needs a type") }
        var params = attributes
        params["name"] = nil
        params["type"] = nil
        let e = SchedulerSettings.Element(kind: kind, name: n, type: type, parameters: params, line: line)
        if inConfiguration { settings.configurations[settings.configurations.count - 1].elements.append(e) } else { settings.shared.append(e) }
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "configuration" { inConfiguration = false }
        depth -= 1
    }
}
