import EtcdProto
import Raft
import Testing
@testable import Server

@Suite struct MembershipModelTests {
    typealias M = Membership.Member

    /// etcd's ValidateConfigurationChange, rule by rule.
    @Test func changesFollowEtcdsRules() {
        var m = Membership()
        let one = M(id: 1, name: "m1", peerURLs: ["http://a:1"])
        #expect(m.validate(.add(one)) == nil)
        m.apply(.add(one))
        #expect(m.validate(.add(one)) == .idExists)
        #expect(m.validate(.add(M(id: 2, peerURLs: ["http://b:2", "http://a:1"]))) == .peerURLExists)
        #expect(m.validate(.add(M(id: 2, peerURLs: ["http://b:2"], isLearner: true))) == nil)
        m.apply(.add(M(id: 2, peerURLs: ["http://b:2"], isLearner: true)))
        #expect(m.validate(.add(M(id: 3, peerURLs: ["http://c:3"], isLearner: true))) == .tooManyLearners)
        #expect(m.voters == [1] && m.learners == [2])
        #expect(m.validate(.promote(1)) == .notLearner)
        #expect(m.validate(.promote(9)) == .notFound)
        m.apply(.promote(2))
        #expect(m.voters == [1, 2] && m.learners.isEmpty)
        #expect(m.validate(.update(2, peerURLs: ["http://a:1"])) == .peerURLExists)
        #expect(m.validate(.update(2, peerURLs: ["http://b:2", "http://b:3"])) == nil, "its own URLs are not taken")
        #expect(m.validate(.update(7, peerURLs: ["http://z:1"])) == .notFound)
        m.apply(.remove(2))
        #expect(m.validate(.remove(2)) == .idRemoved, "a removed ID never comes back")
        #expect(m.validate(.add(M(id: 2, peerURLs: ["http://b:2"]))) == .idRemoved)
        #expect(Membership.Refusal.idRemoved.status.message == "etcdserver: member not found")
        m.publish(1, name: "one", clientURLs: ["http://a:9"])
        m.publish(2, name: "gone", clientURLs: [])
        #expect(m[1]?.name == "one" && m[2] == nil)
    }

    /// What the backend keeps reads back the same, removed IDs included.
    @Test func theBackendsCopyRoundTrips() throws {
        var m = Membership()
        m.apply(.add(M(id: 5, name: "five", peerURLs: ["http://e:5"], clientURLs: ["http://e:6"])))
        m.apply(.add(M(id: 6, peerURLs: ["http://f:6"], isLearner: true)))
        m.apply(.add(M(id: 7, peerURLs: ["http://g:7"])))
        m.apply(.remove(7))
        m.apply(.add(M(id: UInt64.max, peerURLs: ["http://h:8"])))
        m.apply(.remove(UInt64.max))
        #expect(try Membership(encoded: m.encoded()) == m)
        #expect(try Membership(encoded: Membership().encoded()) == Membership())
    }

    /// A membership entry is etcd's raftpb.ConfChange with etcd's JSON
    /// member as its context, and reads back as the change it carries.
    @Test func entriesAreEtcdsConfChanges() throws {
        let add = MembershipEntry(requestID: 42, change: .add(M(id: 10, name: "m\"1", peerURLs: ["http://a:1", "http://b:2"])))
        let learner = MembershipEntry(requestID: 43, change: .add(M(id: 11, peerURLs: ["http://c:3"], isLearner: true)))
        let promote = MembershipEntry(requestID: 44, change: .promote(11))
        let update = MembershipEntry(requestID: 45, change: .update(10, peerURLs: ["http://d:4"]))
        let remove = MembershipEntry(requestID: 46, change: .remove(10))
        for e in [add, learner, promote, update, remove] {
            #expect(MembershipEntry(encoded: try e.encoded()) == e)
        }
        // Raft reads its part the same way.
        #expect(ConfChange(encoded: try learner.encoded()) == .addLearner(11))
        #expect(ConfChange(encoded: try promote.encoded()) == .addVoter(11))
        #expect(ConfChange(encoded: try remove.encoded()) == .remove(10))
        // The context, byte for byte as etcd's encoding/json writes it.
        #expect(try context(add.encoded())
                == #"{"id":10,"peerURLs":["http://a:1","http://b:2"],"name":"m\"1"}"#)
        #expect(try context(learner.encoded()) == #"{"id":11,"peerURLs":["http://c:3"],"isLearner":true}"#)
        #expect(try context(promote.encoded()) == #"{"id":11,"peerURLs":null,"isPromote":true}"#)
        // An entry from before contexts (bootstrap): a member with no URLs.
        #expect(MembershipEntry(encoded: ConfChange.addVoter(12).encoded)?.change == .add(M(id: 12)))
        #expect(MembershipEntry(encoded: [0xff, 0xff]) == nil)
    }

    @Test func theJSONReaderTakesWhatEtcdWritesAndRefusesTheRest() {
        let o = MiniJSON.object(Array(#" { "id" : 18446744073709551615, "peerURLs":[ "http://x:1" , "\u0041\n" ], "isLearner":false, "name":null } "#.utf8))
        #expect(o?["id"] == .number(UInt64.max))
        #expect(o?["peerURLs"] == .strings(["http://x:1", "A\n"]))
        #expect(o?["isLearner"] == .bool(false) && o?["name"] == .null)
        for bad in [#"{"id":18446744073709551616}"#, #"{"id":1,}"#, #"{"id":1} x"#, #"["a"]"#, #"{"a":"unterminated}"#, ""] {
            #expect(MiniJSON.object(Array(bad.utf8)) == nil, "\(bad)")
        }
    }
}

/// A membership entry's context, as text.
private func context(_ bytes: [UInt8]) throws -> String {
    String(decoding: try Raftpb_ConfChange(serializedBytes: bytes).context, as: UTF8.self)
}
