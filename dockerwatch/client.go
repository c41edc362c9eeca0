package dockerwatch

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
)

// Client is the part of the Docker SDK the watcher uses. *client.Client
// satisfies it; tests embed it in a fake and override what they need.
type Client interface {
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
}

var _ Client = (*client.Client)(nil)

// NewClient returns a Docker client configured from the environment
// (DOCKER_HOST, DOCKER_CERT_PATH, ...) that negotiates the API version, so it
// works from Engine 20.10 (API 1.41) to current releases.
func NewClient() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("create docker client: %w", err)
	}
	return c, nil
}
