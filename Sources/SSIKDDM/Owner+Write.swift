import SSISystem
import SSITransport

/// The owner's half of a write: the commit to the store, and settling a commit whose outcome
/// the store could not tell.
extension KDDMOwner {
    /// Writes `m.value` (or deletes the object) for the grab `m.grab` of `from`, and releases
    /// it. The value is committed only under the view the grab was granted in.
    public func put(_ m: ObjMsg, from: NodeID, delete: Bool) async throws -> ObjMsg {
        var clock = PhaseClock()
        let snap = try await currentView(m, from: from)
        clock.profile("kddm owner: view checked")
        defer { clock.profile("kddm owner: \(m.key.set) written") }
        guard holds(m.key, from, grab: m.grab, view: snap.viewID) else {
            throw SSIError(.conflict, "kddm: write of \(m.key) refused: node \(from) does not hold its grab at node \(me) (the membership view changed since the grab)",
                           hint: "grab it again")
        }
        let bytes: [UInt8]? = delete ? nil : (sets.hooks(m.key.set)?.export(m.value ?? []) ?? (m.value ?? []))
        let tagRev = entries[m.key]!.tagRev
        entries[m.key]!.committing = true
        defer {
            if holds(m.key, from, grab: m.grab, view: snap.viewID) {
                entries[m.key]!.committing = false
                releaseWriter(m.key, from: from, grab: m.grab)
            }
        }
        var newRev: Int64? = nil
        do {
            // Compare-on-revision against another writer, and the view fence: the write
            // commits only if etcd's online set is still the one this grab was granted in.
            newRev = try await store.write(m.key, expected: m.rev, bytes, tagExpected: tagRev, tag: String(m.grab), fence: snap.fence)
        } catch let e as SSIError where e.kind == .unknownOutcome {
            newRev = try await settle(m, from: from, tagRev: tagRev, view: snap.viewID, why: e.message)
        } catch {
            let e = SSIError.wrapping(error)
            throw SSIError(e.kind, "kddm: write of \(m.key) not done: \(e.message)", hint: e.hint)
        }
        guard let rev = newRev else {
            drop(m.key)  // someone wrote under another owner, or the view moved on: reload
            let view = self.view
            Task { await view.refresh() }
            throw SSIError(.conflict, "kddm: write of \(m.key) lost a race (revision \(m.rev) is stale, or the membership view changed)", hint: "grab it again")
        }
        if holds(m.key, from, grab: m.grab, view: snap.viewID) {
            entries[m.key]!.value = delete ? nil : m.value
            entries[m.key]!.rev = rev
            entries[m.key]!.tagRev = rev
            entries[m.key]!.readers = delete ? [] : [from]
        }
        return ObjMsg(key: m.key, value: delete ? nil : m.value, rev: rev, view: snap.viewID)
    }

    /// The store did not say whether our tagged write was done. We keep the object (readers
    /// and writers wait) and find out: voiding the tag makes a write still pending in the
    /// store fail its comparison, so "voided" means not done, for good; a tag that is ours
    /// means done. Returns the write's revision, nil when another write came first (a lost
    /// race), or throws "not done"; when the store stays silent, the entry is dropped (the
    /// next request reloads it) and the outcome stays unknown.
    private func settle(_ m: ObjMsg, from: NodeID, tagRev: Int64, view: UInt64, why: String) async throws -> Int64? {
        for attempt in 0..<5 {
            if attempt > 0 { try? await Task.sleep(for: timing.settleBackoff * (1 << attempt)) }
            let r: (voided: Bool, revision: Int64, tag: (value: [UInt8], rev: Int64)?)
            do { r = try await store.voidTag(m.key, expected: tagRev, void: "void:\(m.grab)") } catch { continue }
            if r.voided {
                if holds(m.key, from, grab: m.grab, view: view) { entries[m.key]!.tagRev = r.revision }
                throw SSIError(.conflict, "kddm: write of \(m.key) not done (\(why))", hint: "grab it again")
            }
            if let t = r.tag, String(decoding: t.value, as: UTF8.self) == String(m.grab) { return t.rev }
            return nil
        }
        drop(m.key)
        throw SSIError(.unknownOutcome, "kddm: write of \(m.key) may or may not have been done: etcd does not answer (\(why))", hint: "read it to know")
    }
}
