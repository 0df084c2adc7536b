import Foundation

/// The settings a node starts with when its configuration names no file: the text of
/// share/scheduler/default.xml (a test checks that the two are the same), built in so that a
/// daemon installed anywhere has them.
public enum DefaultSettings {
    public static let source = "(built-in default.xml)"
    public static let xml = """
<?xml version="1.0"?>
<!-- The settings every node starts with: balance load by migration, as MOSIX does out of
     the box. docs/scheduler.md describes every element and attribute. -->
<scheduler>
  <!-- Probe periods x2 while the node's CPUs are over 95% busy: a busy node samples less,
       but not so much less that balancing reacts late. -->
  <periods stretch-above="0.95" factor="2"/>
  <!-- Shared probes: loaded whatever the configuration; selectors read these. -->
  <probe name="cpu" type="cpu" period-ms="500"/>
  <probe name="mem" type="memory" period-ms="2000"/>
  <probe name="apps" type="apps" period-ms="1000"/>
  <filter name="load" type="moving-average" input="cpu.load" window="3"/>

  <configuration name="balance" selector="otherwise">
    <policy name="place" type="placement" input="load"/>
    <!-- Nodes compared by their applications' demand (fresh, a move counted where it goes);
         up to 3 moves a round, every 500 ms; an application stays 2 s where it arrives; a
         pair of nodes reverses direction after 5 s, then 20 s, then 80 s, then not for an
         hour. -->
    <policy name="lb" type="balance" input="load" measure="apps" moves-per-round="3" threshold="0.5" period-ms="500"
            min-residence-ms="2000" return-after-ms="5000" max-per-minute="30" settle-ms="3000"/>
  </configuration>
</scheduler>
"""

    public static func parsed() -> SchedulerSettings {
        // Checked by SettingsTests.builtInDefaultIsTheShippedFile: cannot fail.
        try! SchedulerSettings.parse(Data(xml.utf8), source: source)
    }
}
