import CairnCluster
import Testing

@testable import CairnNode

/// The full owner's record of refs it passed on: it lasts while any writer of the ref is
/// open, also when the target changed under them (so a later writer cannot start a second
/// ingest of the ref on the owner while an earlier one still streams elsewhere).
@Suite struct DelegationsTests {
  @Test func theRecordOutlivesATargetChange() {
    let d = Delegations()
    d.begin("r", to: NodeID("n2"))
    d.begin("r", to: NodeID("n3"))  // n2 died; the next upload went to n3
    d.end("r")  // the writer that streamed to n2 ends
    #expect(d.target(of: "r") == NodeID("n3"))
    d.end("r")
    #expect(d.target(of: "r") == nil)
    d.end("r")  // an extra end does not go negative or trap
    #expect(d.target(of: "r") == nil)
  }
}
