import Foundation
import SSITestSupport
import Testing

/// Every command's manual: `ssi X --help` and `ssi help X` exit 0 and say what X does.
@Suite struct HelpTests {
    /// Every command path, from the tool's own description (swift-argument-parser's
    /// --experimental-dump-help, the JSON the man page generator reads too).
    static func commands() throws -> [(path: [String], abstract: String)] {
        let r = try run([TestEnv.ssi, "--experimental-dump-help"])
        guard r.status == 0, let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let root = json["command"] as? [String: Any] else {
            throw TestFailure("ssi --experimental-dump-help: \(r.output)")
        }
        var out: [([String], String)] = []
        func walk(_ c: [String: Any], _ path: [String]) {
            for sub in c["subcommands"] as? [[String: Any]] ?? [] {
                guard let name = sub["commandName"] as? String, sub["shouldDisplay"] as? Bool ?? true, name != "help" else { continue }
                out.append((path + [name], sub["abstract"] as? String ?? ""))
                walk(sub, path + [name])
            }
        }
        walk(root, [])
        return out
    }

    @Test(.timeLimit(.minutes(2))) func everySubcommandHasHelpWithAnAbstract() throws {
        let all = try Self.commands()
        #expect(all.count >= 30, "found \(all.count) commands")
        for (path, abstract) in all {
            #expect(!abstract.isEmpty, "ssi \(path.joined(separator: " ")) has no abstract")
            let r = try run([TestEnv.ssi] + path + ["--help"])
            #expect(r.status == 0, "ssi \(path.joined(separator: " ")) --help exited \(r.status): \(r.output)")
            #expect(r.stdout.contains("OVERVIEW: ") && r.stdout.contains("USAGE: "), "ssi \(path.joined(separator: " ")) --help: \(r.output)")
        }
    }

    @Test func runHelpIsHelpNotAProgram() throws {
        for args in [["run", "--help"], ["run", "-h"], ["help", "run"], ["run", "-b", "--help"]] {
            let r = try run([TestEnv.ssi] + args)
            #expect(r.status == 0 && r.stdout.contains("OVERVIEW: Start a command"), "ssi \(args): \(r.output)")
            #expect(r.output.range(of: #"Running application \d"#, options: .regularExpression) == nil, "a program was started")
        }
    }

    @Test func mainCommandsCarryExamples() throws {
        for path in [["run"], ["checkpoint"], ["restart"], ["events"], ["dashboard"], ["cluster", "status"], ["cluster", "up"]] {
            let r = try run([TestEnv.ssi] + path + ["--help"])
            #expect(r.stdout.contains("Examples:"), "ssi \(path.joined(separator: " ")) --help has no examples")
        }
    }
}
