# meshfed: one static-ish binary on a distroless base, run as non-root.
# docker build -t meshfed:dev .
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
# --no-default-features: the product only, without the local test bed.
RUN cargo build --release --locked --no-default-features --bin meshfed && strip target/release/meshfed

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/meshfed /usr/local/bin/meshfed
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshfed"]
