import CairnCore
import GRPCCore
import Testing

@testable import CairnServer

/// What the dashboard calls an error.
@Suite struct NodeMetricsTests {
  /// Answers a pull gets all the time (NOT_FOUND from Info, ALREADY_EXISTS, a cancel) are
  /// calls, not errors; a node's failures are both. The codes are the ones the interceptor
  /// records, from the same conversion.
  @Test func answersAreNotCountedAsErrors() {
    let metrics = NodeMetrics()
    let answers: [ContentError] = [
      .notFound("content sha256:…"), .alreadyExists("content sha256:…"), .cancelled("x"), .invalidArgument("x"),
      .failedPrecondition("x"), .permissionDenied("x"), .resourceExhausted("x"),
    ]
    let failures: [ContentError] = [.internalError("x"), .unavailable("x"), .dataLoss("x"), ContentError(.unknown, "x"), .deadlineExceeded("x")]
    for e in answers + failures {
      metrics.recordCall(method: "Info", code: MetricsInterceptor.codeName(e), duration: .milliseconds(1))
    }
    metrics.recordCall(method: "Info", code: MetricsInterceptor.codeName(nil), duration: .milliseconds(1))
    let info = metrics.methodTotals["Info"]
    #expect(info?.calls == Int64(answers.count + failures.count + 1))
    #expect(info?.errors == Int64(failures.count), "\(String(describing: info))")
  }
}
