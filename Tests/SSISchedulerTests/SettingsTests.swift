import Foundation
import Testing
@testable import SSIScheduler

/// The repository's share/scheduler folder, from this file's path.
let shareDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("share/scheduler").path

func settings(_ xml: String) throws(SettingsError) -> SchedulerSettings {
    try SchedulerSettings.parse(Data(xml.utf8), source: "test.xml")
}

/// The error a bad file gives, or nil if it parsed.
func refusal(_ xml: String) -> SettingsError? {
    do { _ = try settings(xml); return nil } catch { return error }
}

@Suite struct SettingsTests {
    @Test func shippedFilesParse() throws {
        for f in ["default.xml", "day-night.xml", "low-high.xml"] {
            let s = try SchedulerSettings.load(path: "\(shareDir)/\(f)")
            #expect(!s.configurations.isEmpty, "\(f)")
        }
        let d = try SchedulerSettings.load(path: "\(shareDir)/default.xml")
        #expect(d.configurations.map(\.name) == ["balance"])
        #expect(d.configuration("balance")?.elements.contains { $0.type == "balance" } == true)
        #expect(d.stretchAbove == 0.95 && d.stretchFactor == 2)
        #expect(d.shared.map(\.name) == ["cpu", "mem", "apps", "load"])
    }

    @Test func malformedXMLNamesItsLine() throws {
        let e = try #require(refusal("<scheduler>\n<configuration name='a' selector='otherwise'>\n<policy name='p' type='none'>\n</scheduler>"))
        #expect(e.line >= 3, "\(e)")
        #expect(e.reason.contains("malformed"), "\(e)")
    }

    @Test func unknownProbeType() throws {
        let e = try #require(refusal("<scheduler>\n<probe name='x' type='gpu'/>\n<configuration name='a' selector='otherwise'/>\n</scheduler>"))
        #expect(e.line == 2 && e.element == "probe" && e.reason.contains("unknown probe type 'gpu'"), "\(e)")
        #expect(e.description.hasPrefix("test.xml:2: <probe>"))
    }

    @Test func policyConnectedToMissingProbe() throws {
        let xml = """
        <scheduler>
          <probe name="cpu" type="cpu"/>
          <configuration name="a" selector="otherwise">
            <policy name="lb" type="balance" input="load"/>
          </configuration>
        </scheduler>
        """
        let e = try #require(refusal(xml))
        #expect(e.line == 4 && e.element == "policy" && e.reason.contains("'load'"), "\(e)")
        #expect(e.reason.contains("cpu.load"), "lists what is available: \(e)")
    }

    @Test func selectorThatDoesNotParse() throws {
        let xml = "<scheduler>\n<probe name='cpu' type='cpu'/>\n<configuration name='a' selector='cpu.load &gt; &amp;&amp; 1'/>\n</scheduler>"
        let e = try #require(refusal(xml))
        #expect(e.line == 3 && e.reason.contains("does not parse at column"), "\(e)")
    }

    @Test func selectorReadingAnUnsharedValue() throws {
        let xml = "<scheduler>\n<configuration name='a' selector='x.y &gt; 1'>\n<probe name='x' type='cpu'/>\n</configuration>\n</scheduler>"
        let e = try #require(refusal(xml))
        #expect(e.line == 2 && e.reason.contains("reads 'x.y'"), "\(e)")
    }

    @Test func otherRefusals() throws {
        let cases: [(String, String)] = [
            ("<config/>", "root element"),
            ("<scheduler/>", "no <configuration>"),
            ("<scheduler><configuration name='a' selector='otherwise'/><configuration name='b' selector='otherwise'/></scheduler>", "both \"otherwise\""),
            ("<scheduler><configuration name='a' selector='otherwise'/><configuration name='a' selector='1'/></scheduler>", "second configuration"),
            ("<scheduler><configuration name='a'/></scheduler>", "needs a selector"),
            ("<scheduler><probe name='c' type='cpu' period-ms='1'/><configuration name='a' selector='otherwise'/></scheduler>", "period-ms"),
            ("<scheduler><probe name='c' type='cpu'/><filter name='f' type='hysteresis' input='c.load' high='1' low='2'/><configuration name='a' selector='otherwise'/></scheduler>", "low < high"),
            ("<scheduler><probe name='c' type='cpu'/><filter name='f' type='moving-average' input='c.load'/><configuration name='a' selector='otherwise'/></scheduler>", "window"),
            ("<scheduler><probe name='e' type='external'/><configuration name='a' selector='otherwise'/></scheduler>", "command"),
            ("<scheduler><policy name='p' type='none'/><configuration name='a' selector='otherwise'/></scheduler>", "belongs to a <configuration>"),
            ("<scheduler><configuration name='a' selector='otherwise'><policy name='p' type='magic'/></configuration></scheduler>", "unknown policy type"),
            ("<scheduler><probe name='c' type='cpu'/><configuration name='a' selector='otherwise'><policy name='p' type='balance' input='c.load' threshold='-1'/></configuration></scheduler>", "threshold"),
            ("<scheduler><probe name='c' type='cpu'/><configuration name='a' selector='otherwise'><policy name='p' type='balance' input='c.load' measure='vibes'/></configuration></scheduler>", "measure must be"),
            ("<scheduler><probe name='c' type='cpu'/><configuration name='a' selector='otherwise'><policy name='p' type='balance' input='c.load' moves-per-round='x'/></configuration></scheduler>", "moves-per-round"),
            ("<scheduler><bogus/></scheduler>", "unknown element"),
            ("<scheduler><probe name='c' type='cpu'/><configuration name='a' selector='otherwise'><probe name='c' type='cpu'/></configuration></scheduler>", "already a shared"),
        ]
        for (xml, why) in cases {
            let e = refusal(xml)
            #expect(e?.reason.contains(why) == true, "\(xml): \(String(describing: e))")
        }
    }

    @Test func loadFromFileGivesTheProjectError() {
        #expect(throws: (any Error).self) { try SchedulerSettings.load(path: "/nonexistent/s.xml") }
        do { _ = try SchedulerSettings.load(path: "/nonexistent/s.xml") } catch { #expect("\(error)".contains("/nonexistent/s.xml")) }
    }
}

@Suite struct SelectorTests {
    @Test func evaluates() throws {
        let v: [String: Double] = ["cpu.load": 0.7, "clock.hour": 21, "busy": 1]
        let cases: [(String, Bool)] = [
            ("cpu.load > 0.5 && clock.hour >= 20", true),
            ("cpu.load > 0.5 && clock.hour < 20", false),
            ("clock.hour >= 20 || clock.hour < 6", true),
            ("!(cpu.load <= 0.5)", true),
            ("busy", true),
            ("busy == 0", false),
            ("cpu.load * 2 - 0.4 >= 0.9", true),
            ("-cpu.load < 0", true),
            ("true", true), ("false", false),
            ("missing > 1", false),
            ("missing > 1 || busy", true),
            ("cpu.load != 0.7", false),
        ]
        for (text, want) in cases { #expect(try Expression.parse(text).holds(v) == want, "\(text) -> \(String(describing: try? Expression.parse(text)))") }
        #expect(try Expression.parse("a.b + c * (d - 1)").names == ["a.b", "c", "d"])
    }

    @Test func refuses() {
        for bad in ["", "a >", "(a", "a b", "1 +", "&& a", "a ! b", "3x"] {
            #expect(throws: SelectorError.self, "\(bad)") { try Expression.parse(bad) }
        }
    }
}

@Suite struct DefaultSettingsTests {
    @Test func builtInDefaultIsTheShippedFile() throws {
        let shipped = try String(contentsOfFile: "\(shareDir)/default.xml", encoding: .utf8)
        #expect(DefaultSettings.xml + "\n" == shipped || DefaultSettings.xml == shipped)
        #expect(DefaultSettings.parsed().configurations.first?.name == "balance")
    }
}
