"""Load for helloservice: every simulated user requests the main page, pausing 5 to 15 s."""

from locust import HttpUser, between, task


class MainPageVisitor(HttpUser):
    wait_time = between(5, 15)

    @task
    def main_page(self) -> None:
        self.client.get("/")
