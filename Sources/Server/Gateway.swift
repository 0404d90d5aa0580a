import EtcdProto
import EtcdStatus
import Foundation
import SwiftProtobuf
import Transport

/// etcd's gRPC gateway on the client port: `POST /v3/<service>/<method>`
/// with the request as protobuf JSON (proto field names, 64-bit integers
/// as strings, bytes as base64), answered by the same gRPC method, in
/// process, as protobuf JSON; errors as grpc-gateway writes them,
/// `{"error","message","code"}` with its HTTP status (etcd 3.4's). `/v3beta/` and
/// `/v3alpha/` are the same paths, as in etcd 3.4.
struct GatewayRoute: Sendable {
    let method: String
    /// JSON body → the request's protobuf bytes.
    let decode: @Sendable ([UInt8]) throws -> [UInt8]
    /// A response's protobuf bytes → JSON.
    let encode: @Sendable ([UInt8]) throws -> [UInt8]

    init<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ method: String, _: Request.Type, _: Response.Type
    ) {
        self.method = method
        decode = { body in
            var options = JSONDecodingOptions()
            options.ignoreUnknownFields = true
            let request = body.isEmpty ? Request() : try Request(jsonUTF8Bytes: body, options: options)
            return try request.serializedBytes()
        }
        encode = { bytes in
            var options = JSONEncodingOptions()
            options.preserveProtoFieldNames = true
            return try Response(serializedBytes: bytes).jsonUTF8Bytes(options: options)
        }
    }
}

extension EtcdServer {
    static let gatewayRoutes: [String: GatewayRoute] = {
        typealias R = GatewayRoute
        let kv = "/etcdserverpb.KV/", lease = "/etcdserverpb.Lease/", cluster = "/etcdserverpb.Cluster/"
        let maintenance = "/etcdserverpb.Maintenance/", auth = "/etcdserverpb.Auth/"
        let lock = "/v3lockpb.Lock/", election = "/v3electionpb.Election/"
        return [
            "lock/lock": R(lock + "Lock", V3lockpb_LockRequest.self, V3lockpb_LockResponse.self),
            "lock/unlock": R(lock + "Unlock", V3lockpb_UnlockRequest.self, V3lockpb_UnlockResponse.self),
            "election/campaign": R(election + "Campaign", V3electionpb_CampaignRequest.self, V3electionpb_CampaignResponse.self),
            "election/proclaim": R(election + "Proclaim", V3electionpb_ProclaimRequest.self, V3electionpb_ProclaimResponse.self),
            "election/leader": R(election + "Leader", V3electionpb_LeaderRequest.self, V3electionpb_LeaderResponse.self),
            "election/resign": R(election + "Resign", V3electionpb_ResignRequest.self, V3electionpb_ResignResponse.self),
            "kv/range": R(kv + "Range", Etcdserverpb_RangeRequest.self, Etcdserverpb_RangeResponse.self),
            "kv/put": R(kv + "Put", Etcdserverpb_PutRequest.self, Etcdserverpb_PutResponse.self),
            "kv/deleterange": R(kv + "DeleteRange", Etcdserverpb_DeleteRangeRequest.self, Etcdserverpb_DeleteRangeResponse.self),
            "kv/txn": R(kv + "Txn", Etcdserverpb_TxnRequest.self, Etcdserverpb_TxnResponse.self),
            "kv/compaction": R(kv + "Compact", Etcdserverpb_CompactionRequest.self, Etcdserverpb_CompactionResponse.self),
            "lease/grant": R(lease + "LeaseGrant", Etcdserverpb_LeaseGrantRequest.self, Etcdserverpb_LeaseGrantResponse.self),
            "lease/revoke": R(lease + "LeaseRevoke", Etcdserverpb_LeaseRevokeRequest.self, Etcdserverpb_LeaseRevokeResponse.self),
            "kv/lease/revoke": R(lease + "LeaseRevoke", Etcdserverpb_LeaseRevokeRequest.self, Etcdserverpb_LeaseRevokeResponse.self),
            "lease/timetolive": R(lease + "LeaseTimeToLive", Etcdserverpb_LeaseTimeToLiveRequest.self,
                                  Etcdserverpb_LeaseTimeToLiveResponse.self),
            "kv/lease/timetolive": R(lease + "LeaseTimeToLive", Etcdserverpb_LeaseTimeToLiveRequest.self,
                                     Etcdserverpb_LeaseTimeToLiveResponse.self),
            "lease/leases": R(lease + "LeaseLeases", Etcdserverpb_LeaseLeasesRequest.self, Etcdserverpb_LeaseLeasesResponse.self),
            "kv/lease/leases": R(lease + "LeaseLeases", Etcdserverpb_LeaseLeasesRequest.self, Etcdserverpb_LeaseLeasesResponse.self),
            "cluster/member/list": R(cluster + "MemberList", Etcdserverpb_MemberListRequest.self, Etcdserverpb_MemberListResponse.self),
            "maintenance/status": R(maintenance + "Status", Etcdserverpb_StatusRequest.self, Etcdserverpb_StatusResponse.self),
            "maintenance/alarm": R(maintenance + "Alarm", Etcdserverpb_AlarmRequest.self, Etcdserverpb_AlarmResponse.self),
            "maintenance/defragment": R(maintenance + "Defragment", Etcdserverpb_DefragmentRequest.self,
                                        Etcdserverpb_DefragmentResponse.self),
            "maintenance/hash": R(maintenance + "Hash", Etcdserverpb_HashRequest.self, Etcdserverpb_HashResponse.self),
            "maintenance/hashkv": R(maintenance + "HashKV", Etcdserverpb_HashKVRequest.self, Etcdserverpb_HashKVResponse.self),
            "auth/enable": R(auth + "AuthEnable", Etcdserverpb_AuthEnableRequest.self, Etcdserverpb_AuthEnableResponse.self),
            "auth/disable": R(auth + "AuthDisable", Etcdserverpb_AuthDisableRequest.self, Etcdserverpb_AuthDisableResponse.self),
            "auth/status": R(auth + "AuthStatus", Etcdserverpb_AuthStatusRequest.self, Etcdserverpb_AuthStatusResponse.self),
            "auth/authenticate": R(auth + "Authenticate", Etcdserverpb_AuthenticateRequest.self,
                                   Etcdserverpb_AuthenticateResponse.self),
            "auth/user/add": R(auth + "UserAdd", Etcdserverpb_AuthUserAddRequest.self, Etcdserverpb_AuthUserAddResponse.self),
            "auth/user/get": R(auth + "UserGet", Etcdserverpb_AuthUserGetRequest.self, Etcdserverpb_AuthUserGetResponse.self),
            "auth/user/list": R(auth + "UserList", Etcdserverpb_AuthUserListRequest.self, Etcdserverpb_AuthUserListResponse.self),
            "auth/user/delete": R(auth + "UserDelete", Etcdserverpb_AuthUserDeleteRequest.self,
                                  Etcdserverpb_AuthUserDeleteResponse.self),
            "auth/user/changepw": R(auth + "UserChangePassword", Etcdserverpb_AuthUserChangePasswordRequest.self,
                                    Etcdserverpb_AuthUserChangePasswordResponse.self),
            "auth/user/grant": R(auth + "UserGrantRole", Etcdserverpb_AuthUserGrantRoleRequest.self,
                                 Etcdserverpb_AuthUserGrantRoleResponse.self),
            "auth/user/revoke": R(auth + "UserRevokeRole", Etcdserverpb_AuthUserRevokeRoleRequest.self,
                                  Etcdserverpb_AuthUserRevokeRoleResponse.self),
            "auth/role/add": R(auth + "RoleAdd", Etcdserverpb_AuthRoleAddRequest.self, Etcdserverpb_AuthRoleAddResponse.self),
            "auth/role/get": R(auth + "RoleGet", Etcdserverpb_AuthRoleGetRequest.self, Etcdserverpb_AuthRoleGetResponse.self),
            "auth/role/list": R(auth + "RoleList", Etcdserverpb_AuthRoleListRequest.self, Etcdserverpb_AuthRoleListResponse.self),
            "auth/role/delete": R(auth + "RoleDelete", Etcdserverpb_AuthRoleDeleteRequest.self,
                                  Etcdserverpb_AuthRoleDeleteResponse.self),
            "auth/role/grant": R(auth + "RoleGrantPermission", Etcdserverpb_AuthRoleGrantPermissionRequest.self,
                                 Etcdserverpb_AuthRoleGrantPermissionResponse.self),
            "auth/role/revoke": R(auth + "RoleRevokePermission", Etcdserverpb_AuthRoleRevokePermissionRequest.self,
                                  Etcdserverpb_AuthRoleRevokePermissionResponse.self),
        ]
    }()

    /// The gateway path under /v3/ (or /v3beta/, /v3alpha/), if it is one.
    static func gatewayPath(_ path: String) -> String? {
        for prefix in ["/v3/", "/v3beta/", "/v3alpha/"] where path.hasPrefix(prefix) {
            return String(path.dropFirst(prefix.count))
        }
        return nil
    }

    /// The streaming methods: each request message in the body (JSON
    /// objects one after another) goes in; each response comes out as
    /// `{"result":...}` on a line of its own, as the stream goes on (a
    /// watch until the client leaves, a keep-alive once answered).
    static let gatewayStreams: [String: GatewayRoute] = [
        "watch": GatewayRoute("/etcdserverpb.Watch/Watch", Etcdserverpb_WatchRequest.self, Etcdserverpb_WatchResponse.self),
        "lease/keepalive": GatewayRoute("/etcdserverpb.Lease/LeaseKeepAlive", Etcdserverpb_LeaseKeepAliveRequest.self,
                                        Etcdserverpb_LeaseKeepAliveResponse.self),
        "election/observe": GatewayRoute("/v3electionpb.Election/Observe", V3electionpb_LeaderRequest.self,
                                         V3electionpb_LeaderResponse.self),
        "maintenance/snapshot": GatewayRoute("/etcdserverpb.Maintenance/Snapshot", Etcdserverpb_SnapshotRequest.self,
                                             Etcdserverpb_SnapshotResponse.self),
    ]

    /// Serves a gateway request; false if `request` is not one.
    func serveGateway(_ request: HTTP1Request, _ exchange: HTTP1Exchange) -> Bool {
        guard let path = Self.gatewayPath(request.path) else { return false }
        if let stream = Self.gatewayStreams[path], request.method == "POST" {
            serveGatewayStream(stream, request, exchange)
            return true
        }
        // grpc-gateway's answers outside any route are plain text.
        guard let route = Self.gatewayRoutes[path] else {
            exchange.respond(HTTP1Response(status: 404, text: "Not Found\n"))
            return true
        }
        guard request.method == "POST" else {
            exchange.respond(HTTP1Response(status: 405, text: "Method Not Allowed\n"))
            return true
        }
        if let problem = GoBase64.problem(inJSON: request.body) {
            exchange.respond(Self.gatewayError(GRPCStatus(.invalidArgument, problem)))
            return true
        }
        let bytes: [UInt8]
        do {
            bytes = try route.decode(GoBase64.withoutLineBreaks(inBytesFields: request.body))
        } catch {
            exchange.respond(Self.gatewayError(GRPCStatus(.invalidArgument, Self.jsonErrorText(error))))
            return true
        }
        guard case .success(let method) = self.method(for: route.method) else {
            exchange.respond(Self.gatewayError(GRPCStatus(.unimplemented, "unknown method \(route.method)")))
            return true
        }
        var metadata: [(name: String, value: String)] = []
        if let authorization = request.header("authorization") { metadata.append(("authorization", authorization)) }
        var answer: [UInt8]?
        let call = GRPCCall(path: route.method, metadata: metadata) { event in
            switch event {
            case .message(let m):
                answer = m
            case .finished(let status):
                guard status.code == .ok, let m = answer, let json = try? route.encode(m) else {
                    let failed = status.code == .ok ? GRPCStatus(.internal, "no response") : status
                    exchange.respond(Self.gatewayError(failed))
                    return
                }
                exchange.respond(HTTP1Response(contentType: "application/json", body: json))
            }
        }
        exchange.onClose = { call.cancelInProcess() }
        method.handler(call, bytes)
        return true
    }

    private func serveGatewayStream(_ route: GatewayRoute, _ request: HTTP1Request, _ exchange: HTTP1Exchange) {
        var messages: [[UInt8]] = []
        do {
            for object in Self.jsonObjects(request.body) {
                if let problem = GoBase64.problem(inJSON: object) {
                    exchange.respond(Self.gatewayError(GRPCStatus(.invalidArgument, problem)))
                    return
                }
                messages.append(try route.decode(GoBase64.withoutLineBreaks(inBytesFields: object)))
            }
            if messages.isEmpty { messages = [try route.decode([])] }
        } catch {
            exchange.respond(Self.gatewayError(GRPCStatus(.invalidArgument, Self.jsonErrorText(error))))
            return
        }
        guard case .success(let method) = self.method(for: route.method) else {
            exchange.respond(Self.gatewayError(GRPCStatus(.unimplemented, "unknown method \(route.method)")))
            return
        }
        var metadata: [(name: String, value: String)] = []
        if let authorization = request.header("authorization") { metadata.append(("authorization", authorization)) }
        exchange.startStream(contentType: "application/json")
        let call = GRPCCall(path: route.method, metadata: metadata) { event in
            switch event {
            case .message(let m):
                guard let json = try? route.encode(m) else { return }
                exchange.send(Array("{\"result\":".utf8) + json + Array("}\n".utf8))
            case .finished(let status):
                if status.code != .ok { exchange.send(Self.gatewayError(status).body + [10]) }
                exchange.end()
            }
        }
        exchange.onClose = { call.cancelInProcess() }
        // A slow reader backs the stream up (watchers fall back to history
        // until it drains), as over gRPC.
        call.queuedBytesInProcess = { exchange.queuedBytes }
        exchange.onWritable = { call.onWritable?() }
        // A server stream takes its request with the call; a bidirectional
        // one reads them as messages (and, as etcd's, stays open after the
        // body ends).
        if method.kind == .serverStreaming {
            method.handler(call, messages[0])
        } else {
            method.handler(call, [])
            for m in messages where !call.isClosed { call.onMessage?(m) }
            // etcd ends a keep-alive stream when its requests end; a watch
            // stream it keeps open.
            if route.method.hasSuffix("/LeaseKeepAlive") && !call.isClosed { call.onRequestEnd?() }
        }
    }

    /// The JSON objects of a body, one after another (whitespace between).
    static func jsonObjects(_ body: [UInt8]) -> [[UInt8]] {
        var objects: [[UInt8]] = []
        var depth = 0, start = -1, inString = false, escaped = false
        for (i, b) in body.enumerated() {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"):
                if depth == 0 { start = i }
                depth += 1
            case UInt8(ascii: "}"):
                depth -= 1
                if depth == 0 && start >= 0 { objects.append(Array(body[start...i])) }
            default: break
            }
        }
        // An unbalanced body is given whole to the decoder, which says why.
        if depth != 0 || inString { return [body] }
        return objects
    }

    /// grpc-gateway's error body and HTTP status for a gRPC status.
    static func gatewayError(_ status: GRPCStatus) -> HTTP1Response {
        var body = "{\"error\":"
        GoJSONText.quote(status.message, into: &body)
        body += ",\"message\":"
        GoJSONText.quote(status.message, into: &body)
        body += ",\"code\":\(status.code.rawValue)}"
        return HTTP1Response(status: httpStatusOf(status.code), contentType: "application/json", text: body)
    }

    /// A body that is not the request's JSON, said roughly as Go's decoder
    /// would say it.
    static func jsonErrorText(_ error: any Error) -> String {
        switch error {
        case JSONDecodingError.truncated: return "unexpected EOF"
        case BinaryDecodingError.truncated: return "unexpected EOF"
        default: return "invalid request body: \(error)"
        }
    }

    /// grpc-gateway's HTTPStatusFromCode.
    static func httpStatusOf(_ code: GRPCStatusCode) -> Int {
        switch code {
        case .ok: return 200
        case .canceled: return 408
        case .unknown, .internal, .dataLoss: return 500
        case .invalidArgument, .outOfRange: return 400
        case .failedPrecondition: return 412
        case .deadlineExceeded: return 504
        case .notFound: return 404
        case .alreadyExists, .aborted: return 409
        case .permissionDenied: return 403
        case .unauthenticated: return 401
        case .resourceExhausted: return 429
        case .unimplemented: return 501
        case .unavailable: return 503
        }
    }
}
