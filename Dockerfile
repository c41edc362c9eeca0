# sidedns image: a static binary on scratch, run as nobody.
#   docker build -t sidedns .
# In its own network namespace (a compose sidecar) the non-root user can bind
# port 53, since Docker opens low ports to unprivileged users there. On the
# host network it cannot (Docker gives a non-root user no capabilities), so run
# it as root with only that capability (see examples/host-mode):
#   docker run --network host --user 0:0 --cap-drop ALL --cap-add NET_BIND_SERVICE \
#     -v /var/run/docker.sock:/var/run/docker.sock:ro sidedns --listen 172.17.0.1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sidedns ./cmd/sidedns

FROM scratch
COPY --from=build /out/sidedns /sidedns
USER 65534:65534
EXPOSE 53/udp 53/tcp 8053
ENTRYPOINT ["/sidedns"]
