import CairnCore
import Testing

@testable import CairnServer

/// What AccessControl counts per identity.
@Suite struct AccessControlTests {
  /// An open stream's slot is given back when the slot goes, however the call ended:
  /// a call cancelled before its handler ever ran dropped its slot unused, and a slot
  /// that only `end` would release leaked (an identity ended up refused for good).
  @Test func slotsAreGivenBackWhenTheyGo() throws {
    var settings = AccessControl.Settings()
    settings.maxActiveIngestsPerClient = 1
    let access = AccessControl(settings: settings)
    let caller = CallContext(grant: Grant(client: nil, permissions: [.write]), scope: nil, key: "token:farm#1", limited: true, trusted: false)
    var first = try access.slot(.upload, caller)
    #expect(first != nil)
    #expect(throws: (any Error).self) { _ = try access.slot(.upload, caller) }
    let other = CallContext(grant: caller.grant, scope: nil, key: "token:farm#2", limited: true, trusted: false)
    #expect(try access.slot(.upload, other) != nil, "another identity has its own count")
    first = nil
    #expect(try access.slot(.upload, caller) != nil, "the dropped slot came back")
    _ = first
  }
}
