# Builds the bulkhead image. The binary is static-friendly (rustls, no OpenSSL), so the runtime image is
# distroless and runs as non-root.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p bulkhead && cp target/release/bulkhead /bulkhead

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /bulkhead /usr/local/bin/bulkhead
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bulkhead"]
CMD ["run"]
