# sidedns image: a static binary on scratch, run as nobody.
#   docker build -t sidedns .
# Binding port 53 as a non-root user needs the capability at run time:
#   docker run --network host --cap-add NET_BIND_SERVICE \
#     -v /var/run/docker.sock:/var/run/docker.sock:ro --group-add $(stat -c %g /var/run/docker.sock) sidedns
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
