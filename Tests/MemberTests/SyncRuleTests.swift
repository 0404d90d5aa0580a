import Raft
import Testing
@testable import Member

/// Which Readys must reach the disk before what depends on them: Raft's
/// rule (entries, a snapshot, a new term or vote), and nothing else, so
/// that a commit index moving alone costs no fdatasync.
@Suite struct SyncRuleTests {
    @Test func onlyEntriesSnapshotsTermsAndVotesNeedAnFdatasync() {
        let current = HardState(term: 3, vote: 2, commit: 10)
        func ready(_ hs: HardState?, entries: [Entry] = [], snapshot: Snapshot? = nil) -> Ready {
            Ready(hardState: hs, entries: entries, snapshot: snapshot)
        }
        let entry = Entry(term: 3, index: 11)
        #expect(Member.mustSync(ready(nil, entries: [entry]), after: current))
        #expect(Member.mustSync(ready(HardState(term: 3, vote: 2, commit: 11), entries: [entry]), after: current))
        #expect(Member.mustSync(ready(nil, snapshot: Snapshot(index: 20, term: 3)), after: current))
        #expect(Member.mustSync(ready(HardState(term: 4, vote: 0, commit: 10)), after: current), "a new term")
        #expect(Member.mustSync(ready(HardState(term: 3, vote: 1, commit: 10)), after: current), "a new vote")
        #expect(!Member.mustSync(ready(HardState(term: 3, vote: 2, commit: 12)), after: current), "the commit index alone")
        #expect(!Member.mustSync(ready(nil), after: current))
    }
}
